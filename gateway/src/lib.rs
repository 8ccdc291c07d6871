//! The CMP gateway: authorizes agent runs against the CRs in its watch
//! caches, rate-limits them per key, pays for them from credits leased on
//! the Wallet, forwards them to the Instance's runtime and records one usage
//! event per settled run.

pub mod authorize;
pub mod ledger;
pub mod refusal;
