//! The CMP operator: reconciles Organizations, Projects and Wallets into
//! tenant namespaces, isolation, RBAC and credit figures.
//!
//! Each reconciler computes its desired state with pure functions
//! (`*/desired.rs`, unit-tested without a cluster); [`apply::Applier`]
//! writes it with server-side apply, only where the live object differs.

pub mod admission;
pub mod apply;
pub mod backoff;
pub mod config;
pub mod context;
pub mod controllers;
pub mod error;
pub mod labels;
pub mod metrics;
pub mod organization;
pub mod project;
pub mod rbac;
pub mod report;
pub mod run;
pub mod status;
pub mod wallet;
