//! Starting and stopping etcd, kube-apiserver and kube-controller-manager.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::node_network::NodeNetwork;
use crate::process::Supervisor;
use crate::{Error, certs};

/// How long a component may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The workspace root (where `Cargo.toml` and `xtask/` are): the checkout
/// cargo runs in now (its `CARGO_MANIFEST_DIR`, else the current directory),
/// else the one this crate was compiled in. Not the compiled-in path first:
/// cargo reuses artefacts of a shared target directory across checkouts at
/// other paths (its fingerprints are relative to the workspace), so that path
/// may name a checkout that is gone.
pub fn workspace_root() -> PathBuf {
    let compiled = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let running = [std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from), std::env::current_dir().ok()];
    running
        .into_iter()
        .flatten()
        .find_map(|start| start.ancestors().find(|dir| is_workspace_root(dir)).map(Path::to_path_buf))
        .unwrap_or(compiled)
}

/// Whether `dir` is a checkout of this workspace.
fn is_workspace_root(dir: &Path) -> bool {
    dir.join("xtask/go/build.sh").is_file()
        && std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|toml| toml.contains("[workspace]"))
}

/// The cache directory: `$CMP_CACHE`, else `$XDG_CACHE_HOME/cmp`, else `~/.cache/cmp`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CMP_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("cmp")
}

/// Where `cargo xtask cluster` keeps its state and kubeconfig.
pub fn default_state_dir() -> PathBuf {
    cache_dir().join("cluster")
}

/// Builds (once) and returns the directory holding etcd, kube-apiserver,
/// kube-controller-manager and kubectl. `$CMP_KUBE_BIN_DIR` overrides it.
pub fn binaries() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("CMP_KUBE_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    run_install_script("xtask/go/build.sh", &[])
}

/// Runs an install script of the repository (`xtask/...`) with `args`, its
/// progress on stderr, and returns the directory it prints on its last line.
pub(crate) fn run_install_script(script: &str, args: &[&str]) -> Result<PathBuf, Error> {
    let script = workspace_root().join(script);
    let shown = || format!("{} {}", script.display(), args.join(" "));
    // Two test binaries that find a tool missing build it one after the other, not into the same files at once.
    let _building = install_lock(&script)?;
    let output = Command::new("bash")
        .arg(&script)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| Error::Spawn { binary: script.display().to_string(), source })?;
    if !output.status.success() {
        return Err(Error::Build(format!("{} exited with {}", shown(), output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout.lines().last().map(str::trim).unwrap_or_default();
    if dir.is_empty() {
        return Err(Error::Build(format!("{} printed no directory", shown())));
    }
    Ok(PathBuf::from(dir))
}

/// An exclusive lock, held until dropped, on the cache's lock file for
/// `script` (shared by every process on the machine).
fn install_lock(script: &Path) -> Result<std::fs::File, Error> {
    let dir = cache_dir().join("locks");
    let name = script.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let path = dir.join(format!("{name}.lock"));
    let io = |source| Error::Io { path: path.clone(), source };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> Result<u16, Error> {
    free_port_on(std::net::Ipv4Addr::LOCALHOST)
}

/// A free TCP port on `address` (free when asked; bind it soon).
pub fn free_port_on(address: std::net::Ipv4Addr) -> Result<u16, Error> {
    let io = |source| Error::Io { path: PathBuf::from(format!("{address}:0")), source };
    let listener = TcpListener::bind((address, 0)).map_err(io)?;
    Ok(listener.local_addr().map_err(io)?.port())
}

/// The audit policy of [`ControlPlane::start_audited`]: the requests of
/// ServiceAccounts (the binaries run as their chart identities with a token
/// of their ServiceAccount), at Metadata level, which holds the verb, the
/// object and RBAC's decision; nothing of anybody else.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    userGroups: [\"system:serviceaccounts\"]
  - level: None
";

/// The Services' range.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";

/// The `kubernetes` Service's ClusterIP (the first of [`SERVICE_CIDR`]).
const KUBERNETES_SERVICE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 1);

/// The names pods call the API server by.
const KUBERNETES_SERVICE_NAMES: [&str; 4] =
    ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"];

/// A running local control plane. Dropping it stops every process.
pub struct ControlPlane {
    dir: PathBuf,
    audit_dir: Option<PathBuf>,
    kubeconfig: PathBuf,
    server: String,
    bin_dir: PathBuf,
    processes: Supervisor,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager with state in
    /// `dir` (wiped first), waits for `/readyz` and writes `dir/kubeconfig`.
    pub async fn start(dir: &Path) -> Result<Self, Error> {
        Self::launch(dir, false, None).await
    }

    /// [`ControlPlane::start`], with the API server writing an audit log of
    /// every ServiceAccount's requests (JSON lines) into
    /// [`ControlPlane::audit_dir`]: what the test command reads to show that
    /// each of the chart's RBAC rules is used.
    pub async fn start_audited(dir: &Path) -> Result<Self, Error> {
        Self::launch(dir, true, None).await
    }

    /// A control plane for a [`crate::node::Node`] on `network`: the API
    /// server listens on the network's machine-side address (where pods reach
    /// it through the `kubernetes` Service) instead of loopback, calls webhook
    /// and aggregated servers at their pods' addresses, mounts ServiceAccount
    /// tokens into pods, and may call the kubelet; every controller of
    /// kube-controller-manager runs (Deployments, ReplicaSets, EndpointSlices,
    /// node lifecycle, pod CIDRs, ...).
    pub async fn start_for_node(dir: &Path, network: &NodeNetwork) -> Result<Self, Error> {
        Self::launch(dir, false, Some(network)).await
    }

    async fn launch(dir: &Path, audited: bool, network: Option<&NodeNetwork>) -> Result<Self, Error> {
        let bin_dir = binaries()?;
        let previous = dir.join("kubeconfig");
        if previous.exists()
            && let Ok(client) = crate::test::client_for(&previous).await
            && crate::test::is_ready(&client).await
        {
            return Err(Error::AlreadyRunning { dir: dir.to_path_buf() });
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        }
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).map_err(|source| Error::Io { path: pki.clone(), source })?;
        let address = network.map_or(std::net::Ipv4Addr::LOCALHOST, NodeNetwork::host_address);
        // A free port, not 6443: a crashed run's API server may still hold one on the slot's address.
        let api_port = free_port_on(address)?;
        let certs = match network {
            Some(_) => {
                certs::generate_for(&pki, &[address.into(), KUBERNETES_SERVICE_IP.into()], &KUBERNETES_SERVICE_NAMES)?
            }
            None => certs::generate(&pki)?,
        };

        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let kcm_port = free_port()?;
        let server = format!("https://{address}:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        let audit_dir = audited.then(|| dir.join("audit"));
        let mut plane = ControlPlane {
            dir: dir.to_path_buf(),
            audit_dir: audit_dir.clone(),
            kubeconfig: kubeconfig.clone(),
            server: server.clone(),
            bin_dir,
            processes: Supervisor::default(),
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        plane.spawn(
            "etcd",
            &[
                "--name=default".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        plane.wait_for_port("etcd", etcd_port).await?;

        let mut audit_args = Vec::new();
        if let Some(audit_dir) = &audit_dir {
            std::fs::create_dir_all(audit_dir).map_err(|source| Error::Io { path: audit_dir.clone(), source })?;
            let policy = dir.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY).map_err(|source| Error::Io { path: policy.clone(), source })?;
            audit_args = vec![
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", audit_dir.join("audit.log").display()),
                "--audit-log-format=json".into(),
                // Rotated files are all kept (no backup limit); the reader takes every one.
                "--audit-log-maxsize=500".into(),
            ];
        }
        let node_args: Vec<String> = match network {
            Some(_) => vec![
                "--enable-admission-plugins=ServiceAccount".into(),
                "--enable-aggregator-routing=true".into(),
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!("--kubelet-client-certificate={}", certs.admin_cert.display()),
                format!("--kubelet-client-key={}", certs.admin_key.display()),
            ],
            None => vec!["--disable-admission-plugins=ServiceAccount".into()],
        };
        plane.spawn(
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--cert-dir={}", pki.display()),
                format!("--tls-cert-file={}", certs.serving_cert.display()),
                format!("--tls-private-key-file={}", certs.serving_key.display()),
                format!("--client-ca-file={}", certs.ca_cert.display()),
                format!("--secure-port={api_port}"),
                format!("--bind-address={address}"),
                format!("--advertise-address={address}"),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--allow-privileged=true".into(),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-issuer={server}/"),
                format!("--service-account-key-file={}", certs.service_account_public_key.display()),
                format!("--service-account-signing-key-file={}", certs.service_account_key.display()),
                "--v=1".into(),
            ]
            .into_iter()
            .chain(audit_args)
            .chain(node_args)
            .collect::<Vec<_>>(),
        )?;
        write_kubeconfig(&kubeconfig, &server, &certs)?;
        plane.wait_for_readyz().await?;

        let controllers: Vec<String> = match network {
            Some(network) => vec![
                "--controllers=*".into(),
                format!("--service-account-private-key-file={}", certs.service_account_key.display()),
                format!("--root-ca-file={}", certs.ca_cert.display()),
                "--allocate-node-cidrs=true".into(),
                format!("--cluster-cidr={}", network.pod_cidr()),
                "--node-cidr-mask-size=24".into(),
            ],
            None => vec!["--controllers=namespace-controller,garbage-collector-controller,serviceaccount-controller,resourcequota-controller".into()],
        };
        plane.spawn(
            "kube-controller-manager",
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                "--v=1".into(),
            ]
            .into_iter()
            .chain(controllers)
            .collect::<Vec<_>>(),
        )?;
        plane.wait_for_port("kube-controller-manager", kcm_port).await?;
        tracing::info!(server = %plane.server, kubeconfig = %plane.kubeconfig.display(), "local control plane is ready");
        Ok(plane)
    }

    /// The admin kubeconfig (`system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The directory holding the binaries (kubectl among them).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Where the audit log's files are, when started with [`ControlPlane::start_audited`].
    pub fn audit_dir(&self) -> Option<&Path> {
        self.audit_dir.as_deref()
    }

    /// The state directory (logs, certificates, etcd data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An admin client.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        crate::test::client_for(&self.kubeconfig).await
    }

    fn spawn(&mut self, name: &'static str, args: &[String]) -> Result<(), Error> {
        let log = self.dir.join(format!("{name}.log"));
        self.processes.spawn(name, Command::new(self.bin_dir.join(name)).args(args), &log)
    }

    /// Fails with the component's log when it has exited.
    fn check_alive(&mut self, name: &str) -> Result<(), Error> {
        self.processes.check_alive(name)
    }

    fn timed_out(&self, name: &str) -> Error {
        let log = self.dir.join(format!("{name}.log"));
        Error::not_ready(format!("{name} was not ready after {READY_TIMEOUT:?}"), &log)
    }

    async fn wait_for_port(&mut self, name: &str, port: u16) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            self.check_alive(name)?;
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(self.timed_out(name))
    }

    async fn wait_for_readyz(&mut self) -> Result<(), Error> {
        let client = crate::test::client_for(&self.kubeconfig).await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            self.check_alive("kube-apiserver")?;
            if crate::test::is_ready(&client).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(self.timed_out("kube-apiserver"))
    }

    /// Stops every component, newest first: SIGTERM, then SIGKILL after 10s.
    pub fn stop(&mut self) {
        self.processes.stop();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_kubeconfig(path: &Path, server: &str, certs: &certs::CertFiles) -> Result<(), Error> {
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: cmp-local
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: cmp-admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: cmp-local
  context:
    cluster: cmp-local
    user: cmp-admin
current-context: cmp-local
",
        ca = certs.ca_cert.display(),
        cert = certs.admin_cert.display(),
        key = certs.admin_key.display(),
    );
    std::fs::write(path, yaml).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}
