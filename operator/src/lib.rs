//! The CMP operator: reconciles Organizations, Projects, Offerings,
//! Instances and Wallets into tenant namespaces, isolation, RBAC, verified
//! flow artifacts, API keys, registered flows and credit figures.
//!
//! Every kind runs in one reconcile shell ([`shell`]) as a short pipeline:
//! observe (from the [`cache`]), desired (pure functions in `*/desired.rs`,
//! unit-tested without a cluster), apply ([`apply::Applier`], server-side
//! apply only where the cached object differs), and the status write.

pub mod admission;
pub mod apply;
pub mod artifact;
pub mod backoff;
pub mod cache;
pub mod cli;
pub mod context;
pub mod controllers;
pub mod error;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod fleet;
pub mod flows;
pub mod gitops;
pub mod instance;
pub mod knowledge;
pub mod metrics;
pub mod offering;
pub mod organization;
pub mod project;
pub mod rbac;
pub mod relevant;
pub mod run;
pub mod settings;
pub mod settle;
pub mod shell;
pub mod vault;
pub mod wallet;
