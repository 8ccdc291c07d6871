//! Tests on a real node (`cmp_testenv::node`), each on a cluster of its own
//! (a control plane, a node and a network slot), in one test binary so that
//! they run side by side (two at a time, one per core): most of their time is
//! spent waiting for pods.
//!
//! - `node`: the node itself (cluster DNS, Services, NetworkPolicies enforced);
//! - `network_policies`: the operator's rendered policies on real packets;
//! - `dedicated`: a Dedicated runtime served from a pod;
//! - `chart`: the chart installed with `helm install`, its pods crashing.
//!
//! Needs root, as the suite does (network namespaces, cgroups, iptables).

mod chart;
mod dedicated;
mod network_policies;
mod node;
