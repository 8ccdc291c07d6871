//! The CMP image, built without Docker (`cargo xtask image`), as another OCI
//! implementation reads it and a real OCI runtime runs it: `umoci` (Debian's)
//! unpacks the layout into a runtime bundle and `runc` (Debian's) runs each
//! binary in it as the image's user. The tests' image holds the debug
//! binaries the suite has built, in uncompressed layers; `cargo xtask image`
//! builds the release binaries with gzip layers through the same code.

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

fn run(command: &mut Command) -> (bool, String) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} starts: {e} (xtask/system-packages.sh installs runc and umoci)"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn the_image_runs_each_binary_as_nonroot_under_runc() {
    let scratch = std::env::temp_dir().join(unique_name("image"));
    let layout = scratch.join("layout");
    let built = build_cmp(&debug_binaries(), &layout, Compression::None).expect("the image builds");

    // Unpacked by umoci: it checks every blob against its digest and turns the config into a runtime spec.
    let bundle = scratch.join("bundle");
    let (unpacked, log) = run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{}", layout.display(), built.reference))
        .arg(&bundle));
    assert!(unpacked, "umoci unpacks the layout: {log}");
    let spec_path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).expect("the runtime spec")).expect("JSON");
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
