//! The CMP webhook: turns paid Saleor orders into CRs and serves Kubernetes
//! validating admission. So far: the check of Saleor's signatures and the
//! stores' key cache.

pub mod jwks;
pub mod signature;
