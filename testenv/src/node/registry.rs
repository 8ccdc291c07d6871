//! The node's image registry: the CNCF distribution registry (built from Go
//! modules by `xtask/go/node.sh`, filesystem storage only), listening on the
//! machine's side of the node's network, where containerd pulls every
//! `cmp.local/...` image from (its `hosts.toml`). Images reach it from OCI
//! archives (tars of OCI layouts, as `mkimage` and `cargo xtask image` write
//! them), pushed over the OCI distribution API as any client pushes.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Error;

/// The registry host the node's images are named under (`cmp.local/<repository>:<tag>`).
pub const HOST: &str = "cmp.local";
/// How much of a blob one upload request carries.
const CHUNK_BYTES: usize = 32 << 20;

/// The registry's configuration: storage under `dir`, listening on `addr`.
pub fn config(dir: &Path, addr: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
        dir.display()
    )
}

/// containerd's `hosts.toml` for [`HOST`]: pulls go to the registry at `addr`, over plain HTTP.
pub fn hosts_toml(addr: &str) -> String {
    format!("server = \"http://{addr}\"\n\n[host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
}

/// Pushes the image in the OCI archive `archive` to the registry at
/// `base_url` as `<repository>:<tag>`, the tag being the one the archive's
/// index names (`org.opencontainers.image.ref.name`, its part after the last
/// `:` when it is a whole reference). Blobs the registry has are not sent
/// again. The archive is unpacked into `scratch` (removed after), a folder
/// of the pushing node's own: the same archive may be pushed by several
/// nodes at once. Answers the tag.
pub async fn push(base_url: &str, archive: &Path, repository: &str, scratch: &Path) -> Result<String, Error> {
    let unpacked = unpack(archive, scratch)?;
    let pushed = push_layout(base_url, &unpacked, repository).await;
    let _ = std::fs::remove_dir_all(&unpacked);
    pushed.map_err(|e| Error::Process(format!("pushing {} to {base_url} as {repository}: {e}", archive.display())))
}

fn unpack(archive: &Path, dir: &Path) -> Result<PathBuf, Error> {
    let dir = dir.to_path_buf();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&dir)
        .status()
        .map_err(|source| Error::Spawn { binary: "tar".into(), source })?;
    if !status.success() {
        return Err(Error::Process(format!(
            "tar could not unpack {} ({status}); is it an OCI archive?",
            archive.display()
        )));
    }
    Ok(dir)
}

async fn push_layout(base_url: &str, layout: &Path, repository: &str) -> Result<String, String> {
    let read_json = |path: PathBuf| -> Result<Value, String> {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    let index = read_json(layout.join("index.json"))?;
    let descriptor = &index["manifests"][0];
    let (Some(digest), Some(media_type)) = (descriptor["digest"].as_str(), descriptor["mediaType"].as_str()) else {
        return Err("its index.json names no manifest".into());
    };
    let reference = descriptor["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap_or("latest");
    let tag = reference.rsplit(':').next().unwrap_or(reference).to_string();
    let manifest_path = blob_path(layout, digest)?;
    let manifest = read_json(manifest_path.clone())?;
    let http = reqwest::Client::new();
    let blobs = std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().into_iter().flatten());
    for blob in blobs {
        let blob_digest = blob["digest"].as_str().ok_or("a descriptor without a digest")?;
        push_blob(&http, base_url, repository, layout, blob_digest).await?;
    }
    let body = std::fs::read(&manifest_path).map_err(|e| e.to_string())?;
    let url = format!("{base_url}/v2/{repository}/manifests/{tag}");
    let answer = http.put(&url).header("content-type", media_type).body(body).send().await;
    expect_status(answer, 201, &url).await?;
    Ok(tag)
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, String> {
    let (algorithm, hex) = digest.split_once(':').ok_or_else(|| format!("{digest} is not a digest"))?;
    Ok(layout.join("blobs").join(algorithm).join(hex))
}

/// Uploads one blob in chunks (POST, then PATCH per chunk, then PUT with its digest), unless the registry has it.
async fn push_blob(
    http: &reqwest::Client,
    base_url: &str,
    repository: &str,
    layout: &Path,
    digest: &str,
) -> Result<(), String> {
    let head = http.head(format!("{base_url}/v2/{repository}/blobs/{digest}")).send().await;
    if head.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
        return Ok(());
    }
    let start = format!("{base_url}/v2/{repository}/blobs/uploads/");
    let mut location = upload_location(base_url, expect_status(http.post(&start).send().await, 202, &start).await?)?;
    let path = blob_path(layout, digest)?;
    let mut file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut offset = 0usize;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        (&mut file).take(CHUNK_BYTES as u64).read_to_end(&mut chunk).map_err(|e| e.to_string())?;
        if chunk.is_empty() {
            break;
        }
        let range = format!("{offset}-{}", offset + chunk.len() - 1);
        offset += chunk.len();
        let answer = http
            .patch(&location)
            .header("content-type", "application/octet-stream")
            .header("content-range", range)
            .body(chunk)
            .send()
            .await;
        location = upload_location(base_url, expect_status(answer, 202, &location).await?)?;
    }
    let separator = if location.contains('?') { '&' } else { '?' };
    let finish = format!("{location}{separator}digest={digest}");
    expect_status(http.put(&finish).send().await, 201, &finish).await?;
    Ok(())
}

/// The upload URL a registry answered with (`Location`, which may be relative).
fn upload_location(base_url: &str, response: reqwest::Response) -> Result<String, String> {
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("the registry answered no upload Location")?;
    Ok(if location.starts_with('/') { format!("{base_url}{location}") } else { location.to_string() })
}

async fn expect_status(
    answer: reqwest::Result<reqwest::Response>,
    status: u16,
    url: &str,
) -> Result<reqwest::Response, String> {
    let response = answer.map_err(|e| format!("{url}: {e}"))?;
    if response.status().as_u16() == status {
        return Ok(response);
    }
    let code = response.status();
    let body = response.text().await.unwrap_or_default();
    Err(format!("{url} answered {code} where {status} was expected: {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_pulls_the_node_images_from_the_registry_over_plain_http() {
        let hosts = hosts_toml("10.213.0.1:5000");
        assert!(hosts.starts_with("server = \"http://10.213.0.1:5000\""), "{hosts}");
        assert!(hosts.contains("[host.\"http://10.213.0.1:5000\"]") && hosts.contains("\"pull\", \"resolve\""));
    }

    #[test]
    fn the_registry_stores_under_its_directory_and_listens_where_it_is_told() {
        let config = config(Path::new("/var/lib/registry"), "10.213.0.1:5000");
        assert!(config.contains("rootdirectory: /var/lib/registry") && config.contains("addr: 10.213.0.1:5000"));
    }
}
