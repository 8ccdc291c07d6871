//! The CMP gateway: authorizes agent runs against the CRs in its watch
//! caches, rate-limits them per key, pays for them from credits leased on
//! the Wallet, forwards them to the Instance's runtime and records one usage
//! event per settled run.

pub mod admission;
pub mod as_caller;
pub mod authorize;
pub mod buyer;
pub mod cli;
pub mod connectors;
pub mod console;
pub mod credits;
pub mod directory;
pub mod forward;
pub mod knowledge;
pub mod ledger;
pub mod me;
pub mod metrics;
pub mod middleware;
pub mod oidc;
pub mod outward;
pub mod peers;
pub mod ratelimit;
pub mod refusal;
pub mod relay;
pub mod routes;
pub mod run;
pub mod run_tokens;
pub mod runtime_keys;
pub mod scrub;
pub mod signed;
pub mod signup;
pub mod state;
pub mod usage;
pub mod widget;
