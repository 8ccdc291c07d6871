//! A git server over SSH, standing for a hosted remote reached with a deploy
//! key: `git-ssh-server` (`xtask/go/git-ssh-server.sh`), Go's
//! golang.org/x/crypto/ssh in front of git's own upload-pack and
//! receive-pack, on loopback. Only the authorized key may log in; its host key
//! is fresh for each server, so a client must be told it (`known_hosts`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::control_plane::run_install_script;
use crate::{Error, free_port};

/// Builds (once) and returns the server binary.
pub fn binary() -> Result<PathBuf, Error> {
    Ok(run_install_script("xtask/go/git-ssh-server.sh", &[])?.join("git-ssh-server"))
}

/// An ed25519 key pair written by the server binary.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The private key, OpenSSH form.
    pub private: String,
    /// The public key, as an `authorized_keys` line.
    pub public: String,
}

impl KeyPair {
    /// Generates a key pair at `path` (and `path.pub`).
    pub fn generate(path: &Path) -> Result<Self, Error> {
        let binary = binary()?;
        let status = Command::new(&binary)
            .arg("keygen")
            .arg(path)
            .status()
            .map_err(|source| Error::Spawn { binary: binary.display().to_string(), source })?;
        if !status.success() {
            return Err(Error::Build(format!("git-ssh-server keygen {} exited with {status}", path.display())));
        }
        let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(|source| Error::Io { path: p, source });
        Ok(Self { private: read(path.to_path_buf())?, public: read(path.with_extension("pub"))?.trim().to_string() })
    }
}

/// A running server; dropping it stops it.
pub struct GitSshServer {
    child: Child,
    port: u16,
    host_key: KeyPair,
}

impl GitSshServer {
    /// Serves the bare repositories under `root` to holders of `authorized` (a public key line), keeping its files in `dir`.
    pub async fn start(root: &Path, authorized: &str, dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let host_key = KeyPair::generate(&dir.join("host_key"))?;
        let authorized_keys = dir.join("authorized_keys");
        std::fs::write(&authorized_keys, format!("{authorized}\n"))
            .map_err(|source| Error::Io { path: authorized_keys.clone(), source })?;
        let log = dir.join("git-ssh-server.log");
        let file = std::fs::File::create(&log).map_err(|source| Error::Io { path: log.clone(), source })?;
        let err = file.try_clone().map_err(|source| Error::Io { path: log.clone(), source })?;
        let port = free_port()?;
        let binary = binary()?;
        let child = Command::new(&binary)
            .arg("serve")
            .arg("-root")
            .arg(root)
            .arg("-host-key")
            .arg(dir.join("host_key"))
            .arg("-authorized-keys")
            .arg(&authorized_keys)
            .arg("-listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn { binary: binary.display().to_string(), source })?;
        let server = Self { child, port, host_key };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::not_ready(format!("git-ssh-server did not listen on port {port} within 5 s"), &log))
    }

    /// The URL of the repository `name` (a folder under the root), `ssh://git@127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("ssh://git@127.0.0.1:{}/{name}", self.port)
    }

    /// The `known_hosts` line for this server, as `ssh-keyscan -p <port> 127.0.0.1` prints it.
    pub fn known_hosts(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_key.public)
    }
}

impl Drop for GitSshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
