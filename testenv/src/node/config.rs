//! The node's configuration files, as pure functions of where it lives.

use std::path::Path;

use super::Layout;

/// The cluster's DNS Service address (CoreDNS's `kube-dns`).
pub const CLUSTER_DNS: &str = "10.0.0.10";

/// The pod sandbox's image, pulled from the node's registry.
pub const PAUSE_IMAGE: &str = "cmp.local/pause:node";

/// containerd's configuration (format 2, containerd 1.6): state under the
/// node's directory, its socket in the node's run directory, pods on runc with
/// overlayfs, networks from the node's CNI directory, images of
/// `cmp.local` from the node's registry (its `hosts.toml`).
///
/// Pods' network namespaces are mounted under its state, not the machine's
/// `/run/netns`, so removing the node finds them. `restrict_oom_score_adj`:
/// the VM refuses the negative OOM scores containerd
/// gives the sandbox otherwise.
pub fn containerd(layout: &Layout) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{registry_hosts}"
"#,
        root = layout.dir.join("containerd/root").display(),
        state = layout.dir.join("containerd/state").display(),
        socket = layout.containerd_socket().display(),
        cni = layout.cni_dir().display(),
        registry_hosts = layout.registry_hosts_dir().display(),
    )
}

/// The pods' network: one bridge in the node's namespace, addresses from
/// `pod_cidr`, the bridge as their gateway. No masquerading: a pod's packets
/// keep its address, so NetworkPolicies and the API server see who sent them.
pub fn cni(pod_cidr: &str, ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "cmp",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cmp0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": pod_cidr }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": ipam_dir,
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    })
    .to_string()
}

/// kubelet's configuration: cgroups and pod logs of its own (several nodes
/// may run on one machine, and a kubelet's log cleanup removes the pod log
/// folders it does not know), webhook authentication and authorization
/// (the API server calls it with the admin's client certificate), the
/// cluster's DNS, and eviction thresholds a busy test machine does not cross.
pub fn kubelet(layout: &Layout, node_address: &str, client_ca: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
containerRuntimeEndpoint: unix://{socket}
address: {node_address}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {client_ca}
authorization:
  mode: Webhook
clusterDNS: [{CLUSTER_DNS}]
clusterDomain: cluster.local
resolvConf: ""
failSwapOn: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 60
podLogsDir: {pod_logs}
"#,
        cgroup_root = layout.cgroup_root,
        socket = layout.containerd_socket().display(),
        client_ca = client_ca.display(),
        pod_logs = layout.dir.join("pod-logs").display(),
    )
}

/// kube-proxy's configuration: iptables mode in the node's namespace. It
/// leaves the machine-wide conntrack table size alone (`maxPerCore: 0`).
pub fn kube_proxy(layout: &Layout, kubeconfig: &Path, pod_cidr: &str) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {name}
mode: iptables
clusterCIDR: {pod_cidr}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
"#,
        kubeconfig = kubeconfig.display(),
        name = layout.name,
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn layout() -> Layout {
        Layout {
            name: "cmp-node-3".into(),
            cgroup_root: "/tests/cmp-node-3".into(),
            dir: PathBuf::from("/state/node"),
            run_dir: PathBuf::from("/run/cmp-node-3"),
        }
    }

    #[test]
    fn containerd_keeps_its_socket_and_state_with_the_node() {
        let config = containerd(&layout());
        assert!(config.contains(r#"address = "/run/cmp-node-3/containerd.sock""#), "{config}");
        assert!(config.contains(r#"root = "/state/node/containerd/root""#), "{config}");
        assert!(config.contains(r#"conf_dir = "/state/node/cni""#), "{config}");
        assert!(config.contains(&format!(r#"sandbox_image = "{PAUSE_IMAGE}""#)), "{config}");
    }

    #[test]
    fn pods_keep_their_own_address() {
        let config: serde_json::Value =
            serde_json::from_str(&cni("10.214.3.0/24", Path::new("/state/node/ipam"))).expect("JSON");
        let bridge = &config["plugins"][0];
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.214.3.0/24");
        assert_eq!(bridge["ipam"]["dataDir"], "/state/node/ipam");
    }

    #[test]
    fn kubelet_cgroups_are_the_nodes_own() {
        let config = kubelet(&layout(), "10.213.3.2", Path::new("/pki/ca.crt"));
        assert!(config.contains("cgroupRoot: /tests/cmp-node-3\n"), "{config}");
        assert!(config.contains("address: 10.213.3.2\n"), "{config}");
        assert!(config.contains("containerRuntimeEndpoint: unix:///run/cmp-node-3/containerd.sock\n"), "{config}");
        assert!(config.contains(&format!("clusterDNS: [{CLUSTER_DNS}]")), "{config}");
    }

    #[test]
    fn kube_proxy_leaves_the_machines_conntrack_table_alone() {
        let config = kube_proxy(&layout(), Path::new("/k"), "10.214.3.0/24");
        assert!(config.contains("maxPerCore: 0\n"), "{config}");
        assert!(config.contains("clusterCIDR: 10.214.3.0/24\n"), "{config}");
        assert!(config.contains("hostnameOverride: cmp-node-3\n"), "{config}");
    }
}
