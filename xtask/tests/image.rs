//! The CMP image, built without Docker (`cargo xtask image`), as another OCI
//! implementation reads it and a real OCI runtime runs it: `umoci` (Debian's)
//! unpacks the layout into a runtime bundle and `runc` (Debian's) runs each
//! binary in it as the image's user. The tests' image holds the debug
//! binaries the suite has built, in uncompressed layers; `cargo xtask image`
//! builds the release binaries with gzip layers through the same code. The
//! runtime image of Dedicated Instances runs as the operator's pod runs it:
//! its init container's script, then lfx serving the flow.

use std::path::{Path, PathBuf};
use std::process::Command;

use cmp_testenv::test::unique_name;
use cmp_testenv::workspace_binary;
use xtask::image::{BINARIES, NONROOT, build_cmp};
use xtask::oci::Compression;

/// The directory of the debug binaries, after checking each is built.
fn debug_binaries() -> PathBuf {
    let mut dir = None;
    for binary in BINARIES {
        let path = workspace_binary(binary, binary).expect("the binary builds");
        dir = path.parent().map(Path::to_path_buf);
    }
    dir.expect("a binaries directory")
}

/// Fails the test with the reason when it cannot run containers: runc creates namespaces and cgroups as root.
fn as_root() {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    assert_eq!(uid, 0, "the image tests run containers with runc, which needs root; run the suite as root (CI does)");
}

/// A container started by `runc run`, killed and deleted when dropped (also when the test fails).
struct RunningContainer {
    state: PathBuf,
    id: String,
    runc: std::process::Child,
}

impl Drop for RunningContainer {
    fn drop(&mut self) {
        let runc = |args: &[&str]| Command::new("runc").arg("--root").arg(&self.state).args(args).status();
        let _ = runc(&["kill", &self.id, "KILL"]);
        let _ = self.runc.wait();
        let _ = runc(&["delete", "--force", &self.id]);
    }
}

fn run(command: &mut Command) -> (bool, String) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} starts: {e} (xtask/system-packages.sh installs runc and umoci)"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// `built` unpacked by umoci into `<scratch>/bundle` (umoci checks every blob against its digest and turns the
/// config into a runtime spec): the bundle, the spec's path and the spec.
fn unpack(built: &xtask::image::Built, scratch: &Path) -> (PathBuf, PathBuf, serde_json::Value) {
    let bundle = scratch.join("bundle");
    let image = format!("{}:{}", built.layout.display(), built.reference);
    let (unpacked, log) = run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));
    assert!(unpacked, "umoci unpacks {image}: {log}");
    let spec_path = bundle.join("config.json");
    let spec = serde_json::from_slice(&std::fs::read(&spec_path).expect("the runtime spec")).expect("JSON");
    (bundle, spec_path, spec)
}

#[test]
fn the_image_runs_each_binary_as_nonroot_under_runc() {
    as_root();
    let scratch = std::env::temp_dir().join(unique_name("image"));
    let layout = scratch.join("layout");
    let built = build_cmp(&debug_binaries(), &layout, Compression::None).expect("the image builds");
    let (bundle, spec_path, mut spec) = unpack(&built, &scratch);
    assert_eq!(spec["process"]["user"]["uid"], NONROOT, "{}", spec["process"]);
    assert_eq!(spec["process"]["user"]["gid"], NONROOT, "{}", spec["process"]);
    assert_eq!(spec["process"]["args"], serde_json::json!(["/cmp-operator"]));
    let bundle_of_certificates = std::fs::read_to_string(bundle.join("rootfs/etc/ssl/certs/ca-certificates.crt"))
        .expect("the CA bundle is in the image");
    let certificates = bundle_of_certificates.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(certificates > 100, "the CA bundle holds Debian's certificates, not {certificates}");

    // Each binary starts in the container as uid 65532: its shared libraries are all in the image,
    // and the files are executable by a user that is not root.
    let state = scratch.join("runc");
    for binary in BINARIES {
        spec["process"]["args"] = serde_json::json!([format!("/{binary}"), "--help"]);
        spec["process"]["terminal"] = false.into();
        std::fs::write(&spec_path, serde_json::to_vec(&spec).expect("JSON")).expect("the spec is written");
        let id = format!("{}-{binary}", scratch.file_name().and_then(|n| n.to_str()).unwrap_or("image"));
        let (ran, output) = run(Command::new("runc").arg("--root").arg(&state).args(["run", &id]).current_dir(&bundle));
        assert!(ran, "runc runs {binary} --help as {NONROOT}: {output}");
        assert!(output.contains("Usage:"), "{binary} --help: {output}");
    }

    // The same binaries give the same image: a rebuild changes nothing that is pushed.
    let again = build_cmp(&debug_binaries(), &scratch.join("again"), Compression::None).expect("rebuilds");
    assert_eq!(again.manifest, built.manifest, "the image is reproducible");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn an_image_without_a_built_binary_is_refused_by_name() {
    let empty = std::env::temp_dir().join(unique_name("no-binaries"));
    std::fs::create_dir_all(&empty).expect("a directory");
    let refused = build_cmp(&empty, &empty.join("layout"), Compression::None).expect_err("refused");
    let message = refused.to_string();
    assert!(
        message.contains("cmp-operator is not built") && message.contains("cargo build -p cmp-operator"),
        "{message}"
    );
    assert!(!empty.join("layout").exists(), "nothing is written");
    let _ = std::fs::remove_dir_all(&empty);
}

/// Serves `body` to every GET on a free loopback port, from a thread; returns its URL.
fn serve_once_per_request(body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}/flow.json", listener.local_addr().expect("an address"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
        }
    });
    url
}

/// A runtime spec for `bundle` as the operator's pod runs the runtime: read-only root, `/tmp` a tmpfs,
/// the flows directory mounted, `env` added. The host's network (loopback only), so the test reaches it.
fn pod_like(spec: &mut serde_json::Value, flows: &Path, args: Option<Vec<String>>, env: &[String]) {
    let process = &mut spec["process"];
    if let Some(args) = args {
        process["args"] = serde_json::json!(args);
    }
    process["terminal"] = false.into();
    let mut all: Vec<serde_json::Value> = process["env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !e.as_str().is_some_and(|e| e.starts_with("HOME=")))
        .collect();
    all.extend(env.iter().map(|e| serde_json::Value::String(e.clone())));
    process["env"] = all.into();
    spec["root"]["readonly"] = true.into();
    if let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() {
        namespaces.retain(|n| n["type"] != "network");
    }
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.push(serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
        mounts.push(serde_json::json!({"destination": cmp_operator::gitops::render::FLOWS_DIR, "type": "bind", "source": flows, "options": ["rbind", "rw"]}));
    }
}

#[tokio::test]
async fn the_runtime_image_fetches_checks_and_serves_a_flow_as_nonroot() {
    use cmp_operator::gitops::render::{FLOW_FILE, fetch_script};
    use sha2::Digest;
    as_root();
    let scratch = std::env::temp_dir().join(unique_name("runtime-image"));
    let layout = scratch.join("layout");
    let built = xtask::runtime_image::build_runtime(&layout, Compression::None).expect("the runtime image builds");
    let (bundle, spec_path, spec) = unpack(&built, &scratch);
    assert_eq!(spec["process"]["user"]["uid"], NONROOT, "{}", spec["process"]);

    // The example flow as it is (it carries no id), served over HTTP; the Offering version names it by a UUID.
    let flow_id = "5b0a1f56-0c8e-4d5e-9a55-6f5b2c1e7a01";
    let body = std::fs::read(cmp_testenv::workspace_root().join("examples/flows/echo.json")).expect("the echo flow");
    let flow: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert!(flow.get("id").is_none(), "the example flow carries no id: the runtime gives it the version's");
    let sha256 = hex::encode(sha2::Sha256::digest(&body));
    let url = serve_once_per_request(body);
    let flows = scratch.join("flows");
    std::fs::create_dir_all(&flows).expect("a flows directory");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&flows, std::fs::Permissions::from_mode(0o777)).expect("writable by 65532");
    let state = scratch.join("runc");
    let id = |what: &str| format!("{}-{what}", scratch.file_name().and_then(|n| n.to_str()).unwrap_or("runtime"));

    // The operator's init container script, in this image: a wrong sha256 is refused and leaves no flow ...
    let fetch = |expected: &str| {
        let mut spec = spec.clone();
        let script = vec!["sh".to_string(), "-c".to_string(), fetch_script()];
        pod_like(
            &mut spec,
            &flows,
            Some(script),
            &[format!("ARTIFACT_URL={url}"), format!("ARTIFACT_SHA256={expected}"), "HOME=/tmp".into()],
        );
        std::fs::write(&spec_path, serde_json::to_vec(&spec).expect("JSON")).expect("the spec is written");
        run(Command::new("runc").arg("--root").arg(&state).args(["run", &id("fetch")]).current_dir(&bundle))
    };
    let (fetched, output) = fetch(&"0".repeat(64));
    assert!(!fetched && output.contains("FAILED"), "a wrong sha256 fails the fetch: {output}");
    assert!(!flows.join(FLOW_FILE).exists(), "no flow is left for the runtime");
    // ... and the right one leaves the flow.
    let (fetched, output) = fetch(&sha256);
    assert!(fetched, "the fetch with the artifact's sha256: {output}");
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(flows.join(FLOW_FILE)).expect("the fetched flow").uid();
    assert_eq!(owner, NONROOT, "the image's user, not root, wrote the flow");

    // The runtime, with the variables the operator gives it.
    let port = cmp_testenv::free_port().expect("a port");
    let key = "runtime-image-key";
    let runtime_spec = |flow_id: &str| {
        let mut serve = spec.clone();
        pod_like(
            &mut serve,
            &flows,
            None,
            &[
                "LANGFLOW_HOST=127.0.0.1".into(),
                format!("LANGFLOW_PORT={port}"),
                format!("LANGFLOW_LOAD_FLOWS_PATH={}", cmp_operator::gitops::render::FLOWS_DIR),
                format!("CMP_FLOW_ID={flow_id}"),
                format!("LANGFLOW_API_KEY={key}"),
                "HOME=/tmp".into(),
            ],
        );
        std::fs::write(&spec_path, serde_json::to_vec(&serve).expect("JSON")).expect("the spec is written");
    };
    // A flowId that is not a UUID stops the runtime, saying why, instead of serving a flow no run can reach.
    runtime_spec("support-assistant");
    let (served, output) =
        run(Command::new("runc").arg("--root").arg(&state).args(["run", &id("not-uuid")]).current_dir(&bundle));
    assert!(!served && output.contains("is not a UUID"), "a flowId that is not a UUID is refused: {output}");
    runtime_spec(flow_id);
    let log_path = scratch.join("runtime.log");
    let log_file = std::fs::File::create(&log_path).expect("a log");
    let runc = Command::new("runc")
        .arg("--root")
        .arg(&state)
        .args(["run", &id("serve")])
        .current_dir(&bundle)
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().expect("a log"))
        .stderr(log_file)
        .spawn()
        .expect("runc starts");
    let runtime = RunningContainer { state: state.clone(), id: id("serve"), runc };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let healthy = cmp_testenv::test::eventually("the runtime's /health", std::time::Duration::from_secs(180), || {
        let (client, base) = (client.clone(), base.clone());
        async move { client.get(format!("{base}/health")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
    });
    healthy.await;
    let run_flow = |key: &str| {
        client
            .post(format!("{base}/api/v2/workflows"))
            .header("x-api-key", key)
            .json(&serde_json::json!({"flow_id": flow_id, "input_value": "hello from the image", "tweaks": {}, "mode": "sync"}))
            .send()
    };
    let refused = run_flow("not-the-key").await.expect("an answer");
    assert_eq!(refused.status().as_u16(), 401, "a wrong key is refused");
    let answer = run_flow(key).await.expect("an answer");
    let status = answer.status();
    let text = answer.text().await.expect("a body");
    drop(runtime);
    assert!(
        status.is_success() && text.contains("hello from the image"),
        "{status}: {text}\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
