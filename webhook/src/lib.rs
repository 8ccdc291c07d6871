//! The CMP webhook: turns paid Saleor orders into CRs and serves Kubernetes
//! validating admission.
//!
//! A delivery goes through [`signature`] (checked against the store's keys,
//! cached by [`jwks`]) before its body is read by [`payload`] (the
//! [`event`] its signed `__typename` names, and the order); [`order_state`]
//! decides what the order's true state allows; [`catalog`] says what each
//! SKU sells, and [`order_crs`] turns the order into CRs as pure functions,
//! which the [`provisioner`] carries out against the API server, remembering
//! withdrawn orders in [`order_record`], suspending Instances for the store
//! ([`store_suspension`]) and reporting lines ([`line_events`]). [`server`]
//! holds the HTTP routes and [`manifest`] the Saleor app manifest;
//! [`store_api`] calls a store's GraphQL API with the app token, which
//! [`webhook_sync`] uses to bring an older install's webhooks up to date.
//! [`admission`] holds the validating admission rules CEL cannot express,
//! served over TLS by [`admission_server`].

pub mod admission;
pub mod admission_server;
pub mod catalog;
pub mod cli;
pub mod event;
pub mod jwks;
pub mod line_events;
pub mod manifest;
pub mod metrics;
pub mod order_crs;
pub mod order_record;
pub mod order_state;
pub mod payload;
pub mod provisioner;
pub mod run;
pub mod server;
pub mod signature;
pub mod store_api;
pub mod store_suspension;
pub mod webhook_sync;
