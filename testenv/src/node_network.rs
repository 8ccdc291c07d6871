//! The network a test's node lives in: a network namespace of its own, joined
//! to the machine by one veth pair, so pods never see the machine's loopback
//! and nothing they send is routed off the machine.
//!
//! Slot `N` (one per node running at once, taken with a file lock) gives:
//! - the namespace `cmp-node-N`;
//! - the veth pair `cmpnNh` (the machine's side, `10.213.N.1/24`) and
//!   `cmpnNn` (the node's side, `10.213.N.2/24`);
//! - the pods' range `10.214.N.0/24`, on a bridge inside the namespace, and a
//!   route to it through the node, so the API server reaches webhook pods and
//!   tests reach pods by their IP.
//!
//! Servers that pods must reach (the API server first) listen on the
//! machine's side of the pair; every other server stays on loopback. The
//! namespace has no default route: a packet for any other address is dropped
//! there.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use crate::Error;
use crate::control_plane::cache_dir;

/// How many nodes may run at once on one machine.
const SLOTS: u8 = 32;

/// A node's network namespace and addresses. Dropping it kills what still
/// runs inside and deletes the namespace, the veth pair and the route.
pub struct NodeNetwork {
    slot: u8,
    _lock: File,
}

impl NodeNetwork {
    /// Takes a free slot, removes what a crashed run left in it, and creates
    /// the namespace and the veth pair.
    pub fn create() -> Result<Self, Error> {
        let locks = cache_dir().join("locks");
        std::fs::create_dir_all(&locks).map_err(|source| Error::Io { path: locks.clone(), source })?;
        for slot in 0..SLOTS {
            let path = locks.join(format!("node-network-{slot}.lock"));
            let lock = File::create(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
            if lock.try_lock().is_err() {
                continue;
            }
            let network = NodeNetwork { slot, _lock: lock };
            network.remove();
            network.set_up()?;
            return Ok(network);
        }
        Err(Error::Process(format!(
            "all {SLOTS} node network slots are taken (locks in {}): stop other test nodes first",
            locks.display()
        )))
    }

    /// The network namespace's name.
    pub fn namespace(&self) -> String {
        format!("cmp-node-{}", self.slot)
    }

    /// The namespace's file, for `nsenter --net=`.
    pub fn namespace_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(self.namespace())
    }

    /// The machine's side of the pair: where servers that pods reach listen.
    pub fn host_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.slot, 1)
    }

    /// The node's address (kubelet, kube-proxy, kube-router).
    pub fn node_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.slot, 2)
    }

    /// The pods' range.
    pub fn pod_cidr(&self) -> String {
        format!("10.214.{}.0/24", self.slot)
    }

    /// A name for the node's host: `cmp-node-N`.
    pub fn node_name(&self) -> String {
        self.namespace()
    }

    /// `program`, run inside the namespace's network (and only its network:
    /// the mounts stay the machine's, so kubelet and containerd see each
    /// other's volume mounts).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net={}", self.namespace_path().display())).arg("--").arg(program);
        command
    }

    fn host_link(&self) -> String {
        format!("cmpn{}h", self.slot)
    }

    fn node_link(&self) -> String {
        format!("cmpn{}n", self.slot)
    }

    fn set_up(&self) -> Result<(), Error> {
        let ns = self.namespace();
        let (host, node) = (self.host_link(), self.node_link());
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &node])?;
        ip(&["link", "set", &node, "netns", &ns])?;
        ip(&["addr", "add", &format!("{}/24", self.host_address()), "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.node_address()), "dev", &node])?;
        ip(&["-n", &ns, "link", "set", &node, "up"])?;
        ip(&["route", "add", &self.pod_cidr(), "via", &self.node_address().to_string(), "dev", &host])?;
        // Pods reach the machine's side through the node; the bridge's traffic passes iptables (kube-proxy, kube-router).
        for (key, value) in [("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1")] {
            let path = format!("/proc/sys/{key}");
            let status = self
                .command("sh")
                .args(["-c", &format!("[ ! -e {path} ] || echo {value} > {path}")])
                .status()
                .map_err(|source| Error::Spawn { binary: "nsenter".into(), source })?;
            if !status.success() {
                return Err(Error::Process(format!("setting {key}={value} in {ns} failed ({status})")));
            }
        }
        tracing::info!(namespace = %ns, host = %self.host_address(), node = %self.node_address(), pods = %self.pod_cidr(), "node network is up");
        Ok(())
    }

    /// Kills what runs in the namespace and deletes it; the veth pair and the
    /// route go with it. Quiet: nothing may be there.
    fn remove(&self) {
        let ns = self.namespace();
        if !self.namespace_path().exists() {
            let _ = quiet_ip(&["link", "del", &self.host_link()]);
            return;
        }
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        let _ = quiet_ip(&["netns", "del", &ns]);
        let _ = quiet_ip(&["link", "del", &self.host_link()]);
    }
}

impl Drop for NodeNetwork {
    fn drop(&mut self) {
        self.remove();
    }
}

fn ip(args: &[&str]) -> Result<(), Error> {
    let output =
        Command::new("ip").args(args).output().map_err(|source| Error::Spawn { binary: "ip".into(), source })?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Process(format!(
        "ip {} failed: {} (the test node needs root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

fn quiet_ip(args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    Command::new("ip").args(args).stderr(std::process::Stdio::null()).status()
}
