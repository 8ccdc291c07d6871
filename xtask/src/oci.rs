//! OCI image layouts written without Docker: each layer is a directory made
//! into a tar by GNU tar (sorted, mtime 0, owned by root, no atime or ctime),
//! so the same files give the same digests and a rebuild of unchanged inputs
//! changes nothing; then the config, the manifest and `index.json` as the
//! OCI image specification (v1.1) lays them out.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How a layer's tar is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`gzip -n`, no name or time): what registries and nodes expect.
    Gzip,
    /// A plain tar: quicker to write, for images that never leave the machine.
    None,
}

/// A layer written into a layout's blobs.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:<hex>` of the stored blob.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar (the config's diff id).
    pub diff_id: String,
    /// The stored blob's size in bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// What made it (the config's history).
    pub created_by: String,
}

/// What the image runs: the config's `config` part.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// `uid:gid`.
    pub user: String,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub labels: Vec<(String, String)>,
}

/// An OCI image layout directory being written: beside its destination
/// until [`Layout::finish`] puts it there, so a build that fails leaves the
/// image that was there before.
pub struct Layout {
    dir: PathBuf,
    destination: PathBuf,
}

impl Layout {
    /// A fresh layout that [`Layout::finish`] writes to `destination`.
    pub fn create(destination: &Path) -> anyhow::Result<Self> {
        let name = destination.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = destination.with_file_name(format!("{name}.partial"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir.join("blobs/sha256")).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Self { dir, destination: destination.to_path_buf() })
    }

    /// An empty directory to gather a layer's files in, inside the layout being written (gone at finish).
    pub fn staging(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join("staging").join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Adds the tree under `root` as a layer.
    pub fn add_layer(&self, root: &Path, compression: Compression, created_by: &str) -> anyhow::Result<Layer> {
        let tar = self.dir.join("layer.tar");
        let status = Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "--format=posix"])
            .arg("--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime")
            .arg("-C")
            .arg(root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .context("running tar (GNU tar)")?;
        if !status.success() {
            bail!("tar of {} failed ({status})", root.display());
        }
        let diff_id = sha256_file(&tar)?;
        let (stored, media_type) = match compression {
            Compression::None => (tar, "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                let status = Command::new("gzip").args(["-n", "-6"]).arg(&tar).status().context("running gzip")?;
                if !status.success() {
                    bail!("gzip of the layer of {} failed ({status})", root.display());
                }
                (tar.with_extension("tar.gz"), "application/vnd.oci.image.layer.v1.tar+gzip")
            }
        };
        let digest = self.store(&stored)?;
        let size = std::fs::metadata(self.blob(&digest))?.len();
        Ok(Layer { digest, diff_id, size, media_type: media_type.into(), created_by: created_by.into() })
    }

    /// Adds a layer already written elsewhere (a cached one), hard-linking or copying its blob.
    pub fn add_cached_layer(&self, layer: &Layer, blob: &Path) -> anyhow::Result<()> {
        let to = self.blob(&layer.digest);
        if std::fs::hard_link(blob, &to).is_err() {
            std::fs::copy(blob, &to).with_context(|| format!("copying {} into the layout", blob.display()))?;
        }
        Ok(())
    }

    /// Where a blob of `digest` is stored.
    pub fn blob(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
    }

    /// Writes the config, the manifest and `index.json` naming it `reference`, and moves the layout to its
    /// destination; returns the manifest's digest.
    pub fn finish(&self, layers: &[Layer], run: &RunConfig, reference: &str) -> anyhow::Result<String> {
        let labels: serde_json::Map<String, Value> =
            run.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"User": run.user, "Entrypoint": run.entrypoint, "Env": run.env, "WorkingDir": "/", "Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
            "history": layers.iter().map(|l| json!({"created_by": l.created_by})).collect::<Vec<_>>(),
        });
        let config = self.store_bytes(&serde_json::to_vec(&config)?)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        });
        let (digest, size) = self.store_bytes(&serde_json::to_vec(&manifest)?)?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
                           "annotations": {"org.opencontainers.image.ref.name": reference}}],
        });
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index)?)?;
        let _ = std::fs::remove_dir_all(self.dir.join("staging"));
        if self.destination.exists() {
            std::fs::remove_dir_all(&self.destination)
                .with_context(|| format!("removing the earlier image at {}", self.destination.display()))?;
        }
        std::fs::rename(&self.dir, &self.destination)
            .with_context(|| format!("moving the image to {}", self.destination.display()))?;
        Ok(digest)
    }

    /// Moves the file at `path` into the blobs under its digest.
    fn store(&self, path: &Path) -> anyhow::Result<String> {
        let digest = sha256_file(path)?;
        std::fs::rename(path, self.blob(&digest)).with_context(|| format!("storing {}", path.display()))?;
        Ok(digest)
    }

    fn store_bytes(&self, bytes: &[u8]) -> anyhow::Result<(String, usize)> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        std::fs::write(self.blob(&digest), bytes)?;
        Ok((digest, bytes.len()))
    }
}

/// `sha256:<hex>` of a file's bytes.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// Writes the layout `layout` as an OCI archive (a tar of the layout) at
/// `archive`, for `ctr images import`: through a `.partial` file renamed when
/// complete, so a failed write leaves nothing that looks finished.
pub fn archive(layout: &Path, archive: &Path) -> anyhow::Result<()> {
    let partial = archive.with_extension("tar.partial");
    let status = Command::new("tar").arg("-C").arg(layout).arg("-cf").arg(&partial).arg(".").status()?;
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        bail!("tar of the image layout {} failed ({status}); is the disk full?", layout.display());
    }
    std::fs::rename(&partial, archive).with_context(|| format!("renaming {}", partial.display()))
}
