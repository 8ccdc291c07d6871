//! Process plumbing shared by the CMP binaries: structured logging, the
//! health endpoints and graceful shutdown on SIGTERM or Ctrl-C.

pub mod health;
pub mod shutdown;
pub mod skeleton;
pub mod telemetry;
