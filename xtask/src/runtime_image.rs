//! The runtime image of Dedicated Instances (`cargo xtask image --runtime`):
//! lfx, with the components the example flows use, on Python from Debian.
//!
//! - A layer of Debian's packages: Python 3.11 and what it links, `libstdc++`
//!   for the wheels that need it, and `sh`, `wget` and `sha256sum`, so the
//!   same image is the operator's fetch image (`--gitops-fetch-image`).
//! - A layer with lfx's virtual environment (from PyPI, the one the tests
//!   run, `cmp_testenv::lfx::LFX`) at `/opt/lfx`, and the entrypoint
//!   `/usr/local/bin/cmp-runtime`, which serves the flow in
//!   `$LANGFLOW_LOAD_FLOWS_PATH` under the id `$CMP_FLOW_ID` on
//!   `$LANGFLOW_HOST:$LANGFLOW_PORT`: the variables the operator gives a
//!   Dedicated runtime.
//! - User 65532, `HOME=/tmp`, no bytecode written (the pod's root is read-only).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::image::{Built, CA_BUNDLE, NONROOT, debian_layer};
use crate::oci::{Compression, Layout, RunConfig};

/// The Debian packages asked for; their dependencies come too (see [`closure`]).
pub const RUNTIME_PACKAGES: [&str; 8] = [
    "python3.11-minimal",
    "libpython3.11-stdlib",
    "libstdc++6",
    "dash",
    "coreutils",
    "wget",
    "ca-certificates",
    "libgcc-s1",
];
/// Dependencies that nothing in the image runs: package management and Perl (pulled in by `mailcap`).
const NOT_RUN: [&str; 8] =
    ["dpkg", "install-info", "perl", "perl-base", "perl-modules-5.36", "libperl5.36", "mailcap", "mime-support"];
/// Where lfx's environment is in the image.
const VENV: &str = "opt/lfx";
/// The Python minor version of Debian 12, which lfx's environment must be built with.
const PYTHON: &str = "python3.11";
/// The entrypoint.
pub const ENTRYPOINT: &str = "/usr/local/bin/cmp-runtime";
const ENTRYPOINT_SCRIPT: &str = r#"#!/bin/sh
# A Dedicated Instance's runtime: lfx serving the flow its init container
# fetched and checked, with the variables the operator gives the runtime.
# The flow is served under $CMP_FLOW_ID (the Offering version's flowId, which
# the gateway runs): lfx builds and runs (/api/v2/workflows) only flows whose
# id is a UUID, and an exported flow may carry another id or none.
set -eu
flows="${LANGFLOW_LOAD_FLOWS_PATH:-/flows}"
if [ -n "${CMP_FLOW_ID:-}" ]; then
  served=/tmp/cmp-flows
  /opt/lfx/bin/python - "$flows" "$served" "$CMP_FLOW_ID" <<'PY'
import json, os, sys, uuid
source, target, flow_id = sys.argv[1:]
try:
    uuid.UUID(flow_id)
except ValueError:
    sys.exit(f"cmp-runtime: CMP_FLOW_ID {flow_id!r} is not a UUID; lfx serves only flows whose id is a UUID: give the Offering version a UUID flowId")
names = sorted(n for n in os.listdir(source) if n.endswith(".json"))
if len(names) != 1:
    sys.exit(f"cmp-runtime: {source} holds {len(names)} flows ({', '.join(names) or 'none'}); a Dedicated runtime serves exactly one")
with open(os.path.join(source, names[0]), encoding="utf-8") as f:
    flow = json.load(f)
if not isinstance(flow, dict):
    sys.exit(f"cmp-runtime: {names[0]} is not a flow (a JSON object)")
flow["id"] = flow_id
os.makedirs(target, exist_ok=True)
with open(os.path.join(target, names[0]), "w", encoding="utf-8") as f:
    json.dump(flow, f)
PY
  flows=$served
fi
exec /opt/lfx/bin/python -m lfx serve --flow-dir "$flows" \
  --host "${LANGFLOW_HOST:-0.0.0.0}" --port "${LANGFLOW_PORT:-7860}" --log-level "${LANGFLOW_LOG_LEVEL:-warning}"
"#;

/// Writes the runtime image to the layout `out`.
pub fn build_runtime(out: &Path, compression: Compression) -> anyhow::Result<Built> {
    let venv = cmp_testenv::lfx::install().context("lfx's virtual environment")?;
    let site_packages = venv.join("lib").join(PYTHON).join("site-packages");
    if !site_packages.is_dir() {
        bail!("{} is not a {PYTHON} environment: the image's Python is Debian 12's {PYTHON}", venv.display());
    }
    let packages = closure(&RUNTIME_PACKAGES)?;
    let layout = Layout::create(out)?;
    let base = debian_layer(&layout, "runtime-base", &packages, compression)?;
    let app = layout.staging("lfx")?;
    let image_venv = app.join(VENV);
    std::fs::create_dir_all(image_venv.join("lib").join(PYTHON))?;
    std::fs::create_dir_all(image_venv.join("bin"))?;
    // Hard links where the cache and the layout share a file system (the environment is about 550 MB), else a copy.
    let into = image_venv.join("lib").join(PYTHON);
    let copy = |flags: &str| Command::new("cp").arg(flags).arg(&site_packages).arg(&into).status();
    let linked = copy("-al").context("running cp")?;
    if !linked.success() {
        let _ = std::fs::remove_dir_all(into.join("site-packages"));
        let copied = copy("-a").context("running cp")?;
        if !copied.success() {
            bail!("copying {} into the image failed ({copied})", site_packages.display());
        }
    }
    std::fs::write(image_venv.join("pyvenv.cfg"), "home = /usr/bin\ninclude-system-site-packages = false\n")?;
    std::os::unix::fs::symlink(format!("/usr/bin/{PYTHON}"), image_venv.join("bin/python"))?;
    let bin = app.join("usr/local/bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::write(bin.join("cmp-runtime"), ENTRYPOINT_SCRIPT)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("cmp-runtime"), std::fs::Permissions::from_mode(0o755))?;
    // Debian's dash package makes /bin/sh in its maintainer script, which is not run here.
    std::fs::create_dir_all(app.join("bin"))?;
    std::os::unix::fs::symlink("dash", app.join("bin/sh"))?;
    let lfx_layer =
        layout.add_layer(&app, compression, &format!("{} in /{VENV}; {ENTRYPOINT}", cmp_testenv::lfx::LFX))?;
    std::fs::remove_dir_all(&app)?;
    let reference = cmp_testenv::lfx::LFX.trim_start_matches("lfx==").to_string();
    let run = RunConfig {
        user: format!("{NONROOT}:{NONROOT}"),
        entrypoint: vec![ENTRYPOINT.into()],
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            format!("SSL_CERT_FILE={CA_BUNDLE}"),
            "HOME=/tmp".into(),
            "PYTHONDONTWRITEBYTECODE=1".into(),
            "DO_NOT_TRACK=true".into(),
        ],
        labels: vec![
            ("org.opencontainers.image.title".into(), "cmp-runtime".into()),
            ("org.opencontainers.image.version".into(), reference.clone()),
            ("org.opencontainers.image.description".into(), "lfx serving a Dedicated Instance's flows".into()),
        ],
    };
    let layers = vec![base, lfx_layer];
    let manifest = layout.finish(&layers, &run, &reference)?;
    Ok(Built { layout: out.to_path_buf(), reference, manifest, layers })
}

/// The runtime image as an OCI archive (a tar of its layout, layers
/// uncompressed) for `ctr images import`, and its tag: written once per
/// inputs (lfx's version, the entrypoint, the Debian packages asked for) into
/// the image cache, then reused; an archive of other inputs is removed. To
/// take Debian's newer packages, delete the archives with the downloaded
/// packages (`~/.cache/cmp/image/runtime-*.tar` and `debs`).
pub fn cached_archive() -> anyhow::Result<(std::path::PathBuf, String)> {
    use sha2::Digest;
    let inputs = format!(
        "{}\n{ENTRYPOINT_SCRIPT}\n{}\n{}",
        cmp_testenv::lfx::LFX,
        RUNTIME_PACKAGES.join(","),
        NOT_RUN.join(",")
    );
    let key = &hex::encode(sha2::Sha256::digest(inputs.as_bytes()))[..12];
    let cache = crate::image::cache();
    let archive = cache.join(format!("runtime-{key}.tar"));
    let tag = cmp_testenv::lfx::LFX.trim_start_matches("lfx==").to_string();
    let _lock = crate::image::cache_lock("runtime-archive")?;
    if archive.is_file() {
        return Ok((archive, tag));
    }
    let layout = cache.join(format!("runtime-{key}.layout"));
    let built = build_runtime(&layout, Compression::None)?;
    // A failed tar leaves the layout to look at, and no archive.
    crate::oci::archive(&layout, &archive)?;
    std::fs::remove_dir_all(&layout)?;
    for entry in std::fs::read_dir(&cache)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("runtime-") && name.ends_with(".tar") && entry.path() != archive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok((archive, built.reference))
}

/// `packages` and everything they depend on (`apt-cache depends --recurse`,
/// without recommends or suggests), less [`NOT_RUN`]. Runs `apt-get update`
/// once when apt does not know one of them (no package lists yet).
pub fn closure(packages: &[&str]) -> anyhow::Result<Vec<String>> {
    match known_closure(packages)? {
        Some(all) => Ok(all),
        None => {
            // Fails unless we may (root); then the packages stay unknown and the error says so.
            let _ = Command::new("apt-get").arg("update").status();
            known_closure(packages)?.with_context(|| {
                format!("apt does not know all of {packages:?}: run apt-get update (the runtime image comes from Debian's packages)")
            })
        }
    }
}

/// The closure, or `None` when apt does not know one of `packages`.
fn known_closure(packages: &[&str]) -> anyhow::Result<Option<Vec<String>>> {
    let output = Command::new("apt-cache")
        .args(["depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks"])
        .args(["--no-replaces", "--no-enhances"])
        .args(packages)
        .output()
        .context("running apt-cache depends")?;
    let mut all: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.starts_with(' ') && !line.starts_with('<') && !line.is_empty())
        .map(str::to_string)
        .filter(|package| !NOT_RUN.contains(&package.as_str()))
        .collect();
    all.sort();
    all.dedup();
    let known = output.status.success() && packages.iter().all(|p| all.iter().any(|a| a == p));
    Ok(known.then_some(all))
}
