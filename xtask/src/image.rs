//! The CMP image without Docker (`cargo xtask image`): what the `Dockerfile`
//! builds, as an OCI image layout.
//!
//! - A base layer from Debian's packages (`apt-get download`, unpacked with
//!   `dpkg-deb`): glibc, libgcc, OpenSSL, zlib and the CA certificates, as
//!   `gcr.io/distroless/base-debian12` has them, with the user `nonroot`
//!   (65532). Built once into the cache and reused while the packages are
//!   the same.
//! - A layer with the three binaries at `/`.
//! - The config: user `65532:65532`, entrypoint `/cmp-operator` (the chart
//!   gives each Deployment its own command).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::oci::{Compression, Layer, Layout, RunConfig};

/// The binaries in the image, each at `/<name>`.
pub const BINARIES: [&str; 3] = ["cmp-operator", "cmp-gateway", "cmp-webhook"];
/// The Debian packages of the base layer: what the binaries link (glibc with
/// libm, libgcc_s, OpenSSL and zlib for the operator's libgit2) and the CA
/// certificates the HTTPS clients trust.
pub const BASE_PACKAGES: [&str; 5] = ["libc6", "libgcc-s1", "libssl3", "zlib1g", "ca-certificates"];
/// The user the image runs as: distroless's `nonroot`, the chart's `runAsUser`.
pub const NONROOT: u32 = 65532;
/// Where the CA bundle is (made from the package's certificates, as `update-ca-certificates` makes it).
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Bumped when the base layer's recipe changes, so a cached one is rebuilt.
const BASE_RECIPE: u32 = 1;

/// An image written as an OCI layout.
#[derive(Debug, Clone)]
pub struct Built {
    /// The layout directory.
    pub layout: PathBuf,
    /// Its tag (`org.opencontainers.image.ref.name`).
    pub reference: String,
    /// The manifest's digest.
    pub manifest: String,
    /// Its layers, base first.
    pub layers: Vec<Layer>,
}

/// Where images and their cached parts are kept.
pub fn cache() -> PathBuf {
    cmp_testenv::control_plane::cache_dir().join("image")
}

/// Writes the CMP image with the binaries in `binaries` (a cargo profile's
/// directory) to the layout `out`.
pub fn build_cmp(binaries: &Path, out: &Path, compression: Compression) -> anyhow::Result<Built> {
    for name in BINARIES {
        if !binaries.join(name).is_file() {
            bail!("{} is not built: build it first (cargo build -p {name})", binaries.join(name).display());
        }
    }
    let layout = Layout::create(out)?;
    let base = base_layer(&layout, compression)?;
    let app = layout.staging("binaries")?;
    for name in BINARIES {
        let (from, to) = (binaries.join(name), app.join(name));
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        }
    }
    let binaries_layer = layout.add_layer(&app, compression, "COPY cmp-operator cmp-gateway cmp-webhook /")?;
    std::fs::remove_dir_all(&app)?;
    let version = env!("CARGO_PKG_VERSION");
    let run = RunConfig {
        user: format!("{NONROOT}:{NONROOT}"),
        entrypoint: vec!["/cmp-operator".into()],
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            format!("SSL_CERT_FILE={CA_BUNDLE}"),
        ],
        labels: vec![
            ("org.opencontainers.image.title".into(), "cmp".into()),
            ("org.opencontainers.image.version".into(), version.into()),
            ("org.opencontainers.image.description".into(), "cmp-operator, cmp-gateway and cmp-webhook".into()),
        ],
    };
    let layers = vec![base, binaries_layer];
    let manifest = layout.finish(&layers, &run, version)?;
    Ok(Built { layout: out.to_path_buf(), reference: version.into(), manifest, layers })
}

/// The base layer in `layout`: the cached one when the packages are the same, else built and cached.
fn base_layer(layout: &Layout, compression: Compression) -> anyhow::Result<Layer> {
    debian_layer(layout, "base", &BASE_PACKAGES.map(String::from), compression)
}

/// A layer of Debian's `packages` (unpacked, without their documentation),
/// the users, the CA bundle and `/tmp`, cached under `name` while the
/// packages' versions are the same.
pub fn debian_layer(
    layout: &Layout,
    name: &str,
    packages: &[String],
    compression: Compression,
) -> anyhow::Result<Layer> {
    // Concurrent builds (the image tests run in parallel) share the downloaded packages and the cached layers.
    let _lock = cache_lock("debian-layers")?;
    let debs = download_packages(packages)?;
    let names: Vec<String> =
        debs.iter().filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
    let key = format!("recipe {BASE_RECIPE}, {compression:?}: {}", names.join(" "));
    let dir = cache().join(format!("{name}-{}", if compression == Compression::Gzip { "gzip" } else { "tar" }));
    std::fs::create_dir_all(&dir)?;
    let record = dir.join("layer.json");
    if let Ok(text) = std::fs::read_to_string(&record)
        && let Ok((cached_key, layer)) = serde_json::from_str::<(String, Layer)>(&text)
        && cached_key == key
        && dir.join("blob").is_file()
    {
        layout.add_cached_layer(&layer, &dir.join("blob"))?;
        return Ok(layer);
    }
    let root = dir.join("rootfs");
    fresh_dir(&root)?;
    for deb in &debs {
        let status = Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root).status().context("running dpkg-deb")?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed ({status})", deb.display());
        }
    }
    for unneeded in ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian"] {
        let _ = std::fs::remove_dir_all(root.join(unneeded));
    }
    write_base_files(&root)?;
    let summary = if names.len() > 8 { format!("{} Debian packages", names.len()) } else { names.join(" ") };
    let layer = layout.add_layer(&root, compression, &format!("Debian packages: {summary}"))?;
    std::fs::remove_dir_all(&root)?;
    let blob = dir.join("blob");
    std::fs::copy(layout.blob(&layer.digest), &blob).with_context(|| format!("caching {}", blob.display()))?;
    std::fs::write(&record, serde_json::to_vec(&(key, &layer))?)?;
    Ok(layer)
}

/// The users, the CA bundle and `/tmp`.
fn write_base_files(root: &Path) -> anyhow::Result<()> {
    let etc = root.join("etc");
    std::fs::create_dir_all(etc.join("ssl/certs"))?;
    std::fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
        ),
    )?;
    std::fs::write(etc.join("group"), format!("root:x:0:\nnonroot:x:{NONROOT}:\n"))?;
    let mut certificates: Vec<PathBuf> = walk(&root.join("usr/share/ca-certificates"))?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "crt"))
        .collect();
    certificates.sort();
    if certificates.is_empty() {
        bail!("the ca-certificates package held no certificates under usr/share/ca-certificates");
    }
    let mut bundle = Vec::new();
    for certificate in certificates {
        bundle.extend(std::fs::read(&certificate)?);
        if !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
    }
    std::fs::write(root.join(CA_BUNDLE.trim_start_matches('/')), bundle)?;
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// Downloads `packages` (their candidate versions) into the cache, once;
/// returns the `.deb` files. Runs `apt-get update` and tries again when the
/// download fails (apt has no package lists on a fresh machine).
pub fn download_packages(packages: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let dir = cache().join("debs");
    std::fs::create_dir_all(&dir)?;
    let find = |package: &str| -> anyhow::Result<Option<PathBuf>> {
        let prefix = format!("{package}_");
        Ok(std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix))))
    };
    let missing: Vec<&str> = packages.iter().map(String::as_str).filter(|p| matches!(find(p), Ok(None))).collect();
    if !missing.is_empty() {
        let download = || Command::new("apt-get").arg("download").args(&missing).current_dir(&dir).status();
        let mut status = download().context("running apt-get download")?;
        if !status.success() {
            // Fails unless we may (root); then the download fails again and says so.
            let _ = Command::new("apt-get").arg("update").status();
            status = download().context("running apt-get download")?;
        }
        if !status.success() {
            bail!(
                "apt-get download {} failed ({status}): the image's base comes from Debian's packages; run `apt-get update` and try again",
                missing.join(" ")
            );
        }
    }
    packages
        .iter()
        .map(|p| find(p)?.with_context(|| format!("apt-get download {p} wrote no {p}_*.deb into {}", dir.display())))
        .collect()
}

/// An exclusive lock on the image cache's lock file `name`, held until dropped.
pub(crate) fn cache_lock(name: &str) -> anyhow::Result<std::fs::File> {
    let dir = cache().join("locks");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.lock"));
    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.lock().with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() { files.extend(walk(&path)?) } else { files.push(path) }
    }
    Ok(files)
}
