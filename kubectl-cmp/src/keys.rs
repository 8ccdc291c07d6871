//! `kubectl cmp keys create|rotate|revoke <instance> <name>`.
//!
//! Each key's entry in `spec.apiKeys` is applied under a field manager of its
//! own (`kubectl-cmp-key-<name>`), so applying one key never drops another.
//! The operator issues the key and writes its plaintext once to a Secret;
//! `create` and `rotate` wait for it and print it.

use std::time::Duration;

use cmp_crds::instance::{ApiKeyStatus, SecretStore};
use cmp_crds::key_requests::{KeyRequestError, KeyRequests};
use serde::Serialize;

use crate::error::Error;
use crate::output::{Format, print};
use crate::{Outcome, Target};

#[derive(clap::Subcommand)]
pub enum Action {
    /// Adds key `name` to the Instance and prints it, once.
    Create(KeyArgs),
    /// Replaces key `name`: the old key stops working, then a new one is issued under the same name and printed
    /// (a few seconds without a working key: for no gap, create a second key, switch, then revoke the first).
    Rotate(KeyArgs),
    /// Revokes key `name`: the gateway refuses it as soon as it sees the change.
    Revoke(KeyArgs),
}

#[derive(clap::Args)]
pub struct KeyArgs {
    /// The Instance.
    instance: String,
    /// The key's name, for example `production`.
    name: String,
    /// How long to wait for the operator to issue the key.
    #[arg(long, default_value_t = 60)]
    wait_seconds: u64,
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    output: Format,
}

/// A newly issued key, as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct IssuedKey {
    instance: String,
    namespace: String,
    name: String,
    public_id: String,
    key: String,
}

/// The name in this client's field managers: `kubectl-cmp-key-<name>`.
const CLIENT_NAME: &str = "kubectl-cmp";

fn requests(target: &Target, wait_seconds: u64) -> KeyRequests {
    KeyRequests::new(target.client.clone(), &target.namespace, CLIENT_NAME, Duration::from_secs(wait_seconds))
}

pub async fn run(target: &Target, action: Action) -> Result<Outcome, Error> {
    let issued = match &action {
        Action::Revoke(args) => {
            requests(target, args.wait_seconds).revoke(&args.instance, &args.name).await.map_err(error)?;
            eprintln!("revoked key {} of Instance {}/{}", args.name, target.namespace, args.instance);
            return Ok(Outcome::Done);
        }
        Action::Create(args) => (args, requests(target, args.wait_seconds).create(&args.instance, &args.name).await),
        Action::Rotate(args) => (args, requests(target, args.wait_seconds).rotate(&args.instance, &args.name).await),
    };
    let (args, issued) = (issued.0, issued.1.map_err(error)?);
    let Some(key) = issued.plaintext else {
        return Err(Error::Usage(format!(
            "key {} is kept in Vault at {} (field {}): read it there, once",
            args.name, issued.status.secret.name, issued.status.secret.key
        )));
    };
    let shown = IssuedKey {
        instance: args.instance.clone(),
        namespace: target.namespace.clone(),
        name: args.name.clone(),
        public_id: issued.status.public_id,
        key,
    };
    print(args.output, &shown, |k| k.key.clone())?;
    Ok(Outcome::Done)
}

/// A key request's failure as this command says it.
fn error(error: KeyRequestError) -> Error {
    match error {
        KeyRequestError::Api(e) => Error::Kube(e),
        KeyRequestError::NoInstance { instance, namespace } => {
            Error::NotFound { kind: "Instance", name: instance, namespace }
        }
        KeyRequestError::NoKey { instance, name } => Error::Usage(format!(
            "Instance {instance} has no key {name}: `kubectl cmp keys create {instance} {name}` adds it"
        )),
        KeyRequestError::NotWithdrawn { instance, name, seconds } => {
            let hint = format!("`kubectl cmp keys create {instance} {name}` does it");
            Error::Timeout(format!("{}; {hint}", KeyRequestError::NotWithdrawn { instance, name, seconds }))
        }
        e @ KeyRequestError::NotYet { .. } => Error::Timeout(e.to_string()),
        e => Error::Usage(e.to_string()),
    }
}

/// The plaintext of an issued key, from its Secret in the Instance's namespace.
pub async fn read_key(target: &Target, status: &ApiKeyStatus) -> Result<String, Error> {
    if status.secret.store != SecretStore::Secret {
        return Err(Error::Usage(format!(
            "key {} is kept in Vault at {} (field {}): read it there",
            status.name, status.secret.name, status.secret.key
        )));
    }
    requests(target, 0).plaintext(status).await.map_err(error)
}
