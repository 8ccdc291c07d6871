// The two small programs of the tests' node images (xtask/go/node.sh): the pod
// sandbox's pause process, and netprobe, which tests run in pods to send real
// packets across the enforced NetworkPolicies. Standard library only.
module local/cmp/node-images

go 1.26.0
