//! A real Kubernetes node for the tests, and a cluster of its own around it.
//!
//! [`Cluster::start`] makes a [`NodeNetwork`], starts a control plane for it
//! ([`ControlPlane::start_for_node`]) and a [`Node`]:
//! - containerd (Debian's) running pods with runc, the CNI bridge plugin
//!   giving them addresses on a bridge inside the node's namespace;
//! - kubelet, kube-scheduler and kube-proxy (iptables mode), built from the
//!   control plane's Kubernetes modules by `xtask/go/node.sh`;
//! - kube-router's firewall, enforcing NetworkPolicies with iptables and
//!   ipset (the kernel has no nftables queue, which kube-network-policies
//!   needs; kube-router's service proxy and BGP router stay off);
//! - CoreDNS as a pod, behind the `kube-dns` Service.
//!
//! Images come from a registry on the node's network ([`registry`]): the
//! node's own (built by `node.sh`) and any a test pushes
//! ([`Node::push_image`]); containerd pulls them from it, never from outside.
//!
//! kubelet, kube-proxy and kube-router act with the admin's credentials: the
//! node is the tests' machinery, not what they test.

mod config;
mod host;
pub mod probe;
pub mod registry;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::Api;

use crate::apply::{ApplyOptions, apply_yaml};
use crate::control_plane::free_port_on;
use crate::control_plane::{ControlPlane, run_install_script};
use crate::node_network::NodeNetwork;
use crate::process::Supervisor;
use crate::{Error, free_port};

pub use config::{CLUSTER_DNS, PAUSE_IMAGE};

/// The file in a node's run directory naming its state directory, so the next
/// node of the slot finds what a crashed one left mounted there.
const STATE_DIR_FILE: &str = "state-dir";

/// How long the node may take to become Ready and to run CoreDNS.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Where a node keeps its state: named `name`, its pods' cgroups under
/// `cgroup_root`, its files in `dir`, its sockets in `run_dir` (short paths:
/// a socket's path has at most 107 bytes).
#[derive(Debug, Clone)]
pub struct Layout {
    name: String,
    cgroup_root: String,
    dir: PathBuf,
    run_dir: PathBuf,
}

impl Layout {
    fn containerd_socket(&self) -> PathBuf {
        self.run_dir.join("containerd.sock")
    }

    fn cni_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }

    /// containerd's registry hosts (`config_path`): one folder per registry host.
    fn registry_hosts_dir(&self) -> PathBuf {
        self.dir.join("certs.d")
    }
}

/// Builds (once) and returns the directory with the node's binaries and image
/// archives (`xtask/go/node.sh`). `$CMP_NODE_BIN_DIR` overrides it.
pub fn binaries() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("CMP_NODE_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    run_install_script("xtask/go/node.sh", &[])
}

/// Where a test keeps its cluster's state: `~/.cache/cmp/test-runs/<test>-<pid>`
/// (the components' logs are there; a test removes it when it passes).
pub fn state_dir(test: &str) -> PathBuf {
    crate::control_plane::cache_dir().join("test-runs").join(format!("{test}-{}", std::process::id()))
}

/// A control plane and one node, on a network of their own. Dropping it stops
/// the node, then the control plane, then removes the network.
pub struct Cluster {
    /// The node.
    pub node: Node,
    /// Its control plane.
    pub plane: ControlPlane,
    network: NodeNetwork,
}

impl Cluster {
    /// Starts a cluster with state in `dir` (wiped first), and waits until
    /// the node is Ready and cluster DNS answers.
    pub async fn start(dir: &Path) -> Result<Self, Error> {
        let network = NodeNetwork::create()?;
        let plane = ControlPlane::start_for_node(&dir.join("control-plane"), &network).await?;
        let node = Node::start(&plane, &network, &dir.join("node")).await?;
        Ok(Cluster { node, plane, network })
    }

    /// The cluster's network.
    pub fn network(&self) -> &NodeNetwork {
        &self.network
    }

    /// An admin client.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        self.plane.client().await
    }
}

/// A running node. Dropping it kills its pods (by their cgroups), stops its
/// components and unmounts what they mounted; containerd's shims live in the
/// node's network namespace and go with it.
pub struct Node {
    layout: Layout,
    processes: Supervisor,
    /// The registry's base URL, `http://<the machine's address on the node network>:<port>`.
    registry: String,
}

impl Node {
    /// Starts the registry with the node's images, containerd, kubelet,
    /// kube-scheduler, kube-proxy and kube-router, deploys CoreDNS, and
    /// waits until the node is Ready and CoreDNS is available.
    pub async fn start(plane: &ControlPlane, network: &NodeNetwork, dir: &Path) -> Result<Self, Error> {
        let bin = binaries()?;
        let name = network.node_name();
        let layout = Layout {
            cgroup_root: host::cgroup_root(&name),
            dir: dir.to_path_buf(),
            run_dir: Path::new("/run").join(&name),
            name,
        };
        // What a crashed run of this slot left: its pods still run in the slot's cgroups, its
        // mounts stay under the state directory it named in the run directory.
        host::kill_pods(&layout.cgroup_root);
        host::create_cgroups(&layout.cgroup_root)?;
        if let Ok(previous) = std::fs::read_to_string(layout.run_dir.join(STATE_DIR_FILE)) {
            host::unmount_under(Path::new(previous.trim()));
        }
        for stale in [&layout.dir, &layout.run_dir] {
            host::unmount_under(stale);
            if stale.exists() {
                std::fs::remove_dir_all(stale).map_err(|source| Error::Io { path: stale.clone(), source })?;
            }
        }
        for made in [layout.dir.clone(), layout.run_dir.clone(), layout.cni_dir()] {
            std::fs::create_dir_all(&made).map_err(|source| Error::Io { path: made.clone(), source })?;
        }
        let marker = layout.run_dir.join(STATE_DIR_FILE);
        std::fs::write(&marker, layout.dir.display().to_string())
            .map_err(|source| Error::Io { path: marker, source })?;
        let registry_address = network.host_address();
        let registry_address = format!("{registry_address}:{}", free_port_on(registry_address)?);
        let mut node =
            Node { layout, processes: Supervisor::default(), registry: format!("http://{registry_address}") };
        let kubeconfig = plane.kubeconfig().to_path_buf();
        let client_ca = plane.dir().join("pki/ca.crt");

        let registry_config =
            node.write("registry.yaml", &registry::config(&node.layout.dir.join("registry"), &registry_address))?;
        node.spawn("registry", std::process::Command::new(bin.join("registry")).arg("serve").arg(&registry_config))?;
        node.wait_for_registry().await?;
        for image in ["pause", "coredns", "netprobe"] {
            node.push_image(&bin.join(format!("{image}.tar")), &format!("{}/{image}", registry::HOST)).await?;
        }
        let hosts_dir = node.layout.registry_hosts_dir();
        std::fs::create_dir_all(hosts_dir.join(registry::HOST))
            .map_err(|source| Error::Io { path: hosts_dir.clone(), source })?;
        node.write(&format!("certs.d/{}/hosts.toml", registry::HOST), &registry::hosts_toml(&registry_address))?;
        let containerd_config = node.write("containerd.toml", &config::containerd(&node.layout))?;
        node.spawn("containerd", network.command("containerd").arg("--config").arg(&containerd_config))?;
        node.wait_for_socket("containerd").await?;
        node.write("cni/10-cmp.conflist", &config::cni(&network.pod_cidr(), &node.layout.dir.join("ipam")))?;

        let kubelet_config = node
            .write("kubelet.yaml", &config::kubelet(&node.layout, &network.node_address().to_string(), &client_ca))?;
        node.spawn(
            "kubelet",
            network
                .command(bin.join("kubelet"))
                .arg(format!("--config={}", kubelet_config.display()))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg(format!("--root-dir={}", node.layout.dir.join("kubelet").display()))
                .arg(format!("--cert-dir={}", node.layout.dir.join("kubelet-pki").display()))
                .arg(format!("--hostname-override={}", node.layout.name))
                .arg(format!("--node-ip={}", network.node_address()))
                .arg("--v=1"),
        )?;
        let scheduler_port = free_port()?;
        node.spawn(
            "kube-scheduler",
            std::process::Command::new(bin.join("kube-scheduler"))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg("--leader-elect=false")
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={scheduler_port}"))
                .arg("--v=1"),
        )?;
        let client = plane.client().await?;
        node.wait_until_ready(&client).await?;
        // Both find their node by name: they start once kubelet has registered it.
        let proxy_config =
            node.write("kube-proxy.yaml", &config::kube_proxy(&node.layout, &kubeconfig, &network.pod_cidr()))?;
        node.spawn(
            "kube-proxy",
            network.command(bin.join("kube-proxy")).arg(format!("--config={}", proxy_config.display())).arg("--v=1"),
        )?;
        node.spawn(
            "kube-router",
            network
                .command(bin.join("kube-router"))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg(format!("--hostname-override={}", node.layout.name))
                .args(["--run-firewall=true", "--run-router=false", "--run-service-proxy=false"])
                .args(["--enable-cni=false", "--enable-ipv6=false", "--metrics-port=0", "--health-port=0"])
                .arg("--v=1"),
        )?;

        let options = ApplyOptions { field_manager: "cmp-testenv-node".into(), ..Default::default() };
        apply_yaml(&client, "coredns.yaml", include_str!("coredns.yaml"), &options).await?;
        node.wait_for_cluster_dns(&client).await?;
        tracing::info!(node = %node.layout.name, address = %network.node_address(), "node is ready");
        Ok(node)
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.layout.name
    }

    /// The node's state directory (the components' logs are there).
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// Pushes the image in the OCI archive `archive` (as `cargo xtask image`
    /// and `mkimage` write them) to the node's registry as `name`
    /// (`cmp.local/<repository>`), tagged as the archive's index names it;
    /// pods name it by the reference answered (`cmp.local/<repository>:<tag>`)
    /// and kubelet pulls it from there.
    pub async fn push_image(&self, archive: &Path, name: &str) -> Result<String, Error> {
        let repository = name.strip_prefix(&format!("{}/", registry::HOST)).ok_or_else(|| {
            Error::Process(format!("the node's registry serves {}/<repository>, not {name}", registry::HOST))
        })?;
        let scratch = self.layout.dir.join(format!("push-{}", repository.replace('/', "-")));
        let tag = registry::push(&self.registry, archive, repository, &scratch).await?;
        tracing::debug!(archive = %archive.display(), %name, %tag, "image pushed to the node's registry");
        Ok(format!("{name}:{tag}"))
    }

    /// Kills (SIGKILL) the processes of the containers of the pod with
    /// `uid`, as a crash would: the pod keeps its sandbox and address, and
    /// kubelet restarts its containers. Fails when no process was found.
    pub fn crash_pod(&self, uid: &str) -> Result<usize, Error> {
        match host::crash_pod(&self.layout.cgroup_root, uid) {
            0 => Err(Error::Process(format!("no process of pod {uid} is running on node {}", self.layout.name))),
            killed => Ok(killed),
        }
    }

    /// Waits until the registry answers `GET /v2/`.
    async fn wait_for_registry(&mut self) -> Result<(), Error> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            self.processes.check_alive("registry")?;
            let answer = http.get(format!("{}/v2/", self.registry)).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::not_ready(
            format!("the registry did not answer at {} in {READY_TIMEOUT:?}", self.registry),
            &self.log("registry"),
        ))
    }

    fn write(&self, name: &str, contents: &str) -> Result<PathBuf, Error> {
        let path = self.layout.dir.join(name);
        std::fs::write(&path, contents).map_err(|source| Error::Io { path: path.clone(), source })?;
        Ok(path)
    }

    fn spawn(&mut self, name: &str, command: &mut std::process::Command) -> Result<(), Error> {
        let log = self.layout.dir.join(format!("{name}.log"));
        self.processes.spawn(name, command, &log)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.layout.dir.join(format!("{name}.log"))
    }

    /// Fails when a component has exited.
    fn check_alive(&mut self) -> Result<(), Error> {
        for name in ["registry", "containerd", "kubelet", "kube-scheduler", "kube-proxy", "kube-router"] {
            self.processes.check_alive(name)?;
        }
        Ok(())
    }

    async fn wait_for_socket(&mut self, name: &str) -> Result<(), Error> {
        let socket = self.layout.containerd_socket();
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            self.processes.check_alive(name)?;
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::not_ready(format!("{name} did not open {} in {READY_TIMEOUT:?}", socket.display()), &self.log(name)))
    }

    async fn wait_until_ready(&mut self, client: &kube::Client) -> Result<(), Error> {
        let nodes: Api<NodeObject> = Api::all(client.clone());
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            self.check_alive()?;
            if let Ok(Some(node)) = nodes.get_opt(&self.layout.name).await
                && is_ready(&node)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(Error::not_ready(
            format!("node {} was not Ready after {READY_TIMEOUT:?}", self.layout.name),
            &self.log("kubelet"),
        ))
    }

    async fn wait_for_cluster_dns(&mut self, client: &kube::Client) -> Result<(), Error> {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            self.check_alive()?;
            if let Ok(coredns) = deployments.get("coredns").await
                && coredns.status.and_then(|s| s.available_replicas).unwrap_or(0) > 0
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(Error::not_ready(format!("CoreDNS was not available after {READY_TIMEOUT:?}"), &self.log("kubelet")))
    }
}

impl Drop for Node {
    /// Kills the pods first (kubelet would restart them), then stops the
    /// components, and unmounts what the pods had mounted. containerd's shims
    /// live in the node's network namespace and go with it.
    fn drop(&mut self) {
        host::kill_pods(&self.layout.cgroup_root);
        self.processes.stop();
        host::kill_pods(&self.layout.cgroup_root);
        host::unmount_under(&self.layout.dir);
        host::unmount_under(&self.layout.run_dir);
        let _ = std::fs::remove_dir_all(&self.layout.run_dir);
    }
}

fn is_ready(node: &NodeObject) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
