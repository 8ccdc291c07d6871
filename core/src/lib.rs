//! Process plumbing shared by the CMP binaries: the [`runtime::Runtime`]
//! every binary starts from (structured logging, the health and metrics
//! server, a counted Kubernetes client, graceful shutdown on SIGTERM) and
//! leader election ([`lease`]).

pub mod api_requests;
pub mod egress;
pub mod events;
pub mod health;
pub mod jwks;
pub mod knowledge;
pub mod labels;
pub mod lease;
pub mod openbao;
pub mod runtime;
pub mod secrets;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod watch;
