//! `kubectl cmp keys create|rotate|revoke <instance> <name>`.
//!
//! Each key's entry in `spec.apiKeys` is applied under a field manager of its
//! own (`kubectl-cmp-key-<name>`), so applying one key never drops another.
//! The operator issues the key and writes its plaintext once to a Secret;
//! `create` and `rotate` wait for it and print it.

use std::time::Duration;

use cmp_crds::Instance;
use cmp_crds::instance::{ApiKeyStatus, SecretStore};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde_json::json;

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

/// The field manager of one key's entry.
fn manager(name: &str) -> String {
    format!("kubectl-cmp-key-{name}")
}

/// The apply patch of one key's entry (pure).
pub fn entry_patch(instance: &str, name: &str, revoked: bool) -> serde_json::Value {
    let mut entry = json!({"name": name});
    if revoked {
        entry["revoked"] = json!(true);
    }
    json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance", "metadata": {"name": instance},
           "spec": {"apiKeys": [entry]}})
}

/// A JSON patch that removes key `name` at `index`, testing first that it is still there (pure).
pub fn removal_patch(index: usize, name: &str) -> serde_json::Value {
    json!([{"op": "test", "path": format!("/spec/apiKeys/{index}/name"), "value": name},
           {"op": "remove", "path": format!("/spec/apiKeys/{index}")}])
}

pub async fn run(target: &Target, action: Action) -> Result<Outcome, Error> {
    let (args, verb) = match &action {
        Action::Create(a) => (a, "create"),
        Action::Rotate(a) => (a, "rotate"),
        Action::Revoke(a) => (a, "revoke"),
    };
    let api = Api::<Instance>::namespaced(target.client.clone(), &target.namespace);
    let instance = api.get_opt(&args.instance).await?.ok_or_else(|| Error::NotFound {
        kind: "Instance",
        name: args.instance.clone(),
        namespace: target.namespace.clone(),
    })?;
    let position = instance.spec.api_keys.iter().position(|k| k.name == args.name);
    let issued_before = issued(&instance, &args.name).map(|k| k.public_id.clone());
    match (verb, position) {
        ("create", Some(_)) => {
            return Err(Error::Usage(format!(
                "Instance {} already has a key {}: rotate it, or create one under another name",
                args.instance, args.name
            )));
        }
        ("rotate" | "revoke", None) => {
            return Err(Error::Usage(format!(
                "Instance {} has no key {}: `kubectl cmp keys create {} {}` adds it",
                args.instance, args.name, args.instance, args.name
            )));
        }
        _ => {}
    }
    let apply = |revoked| {
        let params = PatchParams::apply(&manager(&args.name)).force();
        let patch = entry_patch(&args.instance, &args.name, revoked);
        let api = api.clone();
        async move { api.patch(&args.instance, &params, &Patch::Apply(patch)).await }
    };
    match action {
        Action::Revoke(_) => {
            apply(true).await?;
            eprintln!("revoked key {} of Instance {}/{}", args.name, target.namespace, args.instance);
            Ok(Outcome::Done)
        }
        Action::Create(_) => {
            apply(false).await?;
            // A key of this name that was just removed may still be in the status: wait for a new one.
            let key = wait_for_new_key(target, &api, args, issued_before.as_deref()).await?;
            print(args.output, &key, |k| k.key.clone())?;
            Ok(Outcome::Done)
        }
        Action::Rotate(_) => {
            let index = position.unwrap_or_default();
            let patch: json_patch::Patch = serde_json::from_value(removal_patch(index, &args.name))
                .map_err(|e| Error::Output(format!("building the removal: {e}")))?;
            api.patch(&args.instance, &PatchParams::default(), &Patch::<()>::Json(patch)).await?;
            let withdrawn = wait(args.wait_seconds, "the operator to withdraw the old key", || async {
                let instance = api.get(&args.instance).await?;
                Ok(issued(&instance, &args.name).is_none().then_some(()))
            })
            .await;
            if let Err(error) = withdrawn {
                // The old key is out of the spec (so it no longer counts as issued once the operator runs);
                // say where things stand rather than leave the user guessing.
                return Err(Error::Timeout(format!(
                    "{error}. Key {} is removed from Instance {}'s spec but not yet withdrawn; \
                     once the operator has caught up, `kubectl cmp keys create {} {}` issues the new key",
                    args.name, args.instance, args.instance, args.name
                )));
            }
            apply(false).await?;
            let key = wait_for_new_key(target, &api, args, issued_before.as_deref()).await?;
            print(args.output, &key, |k| k.key.clone())?;
            Ok(Outcome::Done)
        }
    }
}

fn issued<'i>(instance: &'i Instance, name: &str) -> Option<&'i ApiKeyStatus> {
    instance.status.as_ref()?.api_keys.iter().find(|k| k.name == name)
}

/// Waits until key `name` is issued (with another public id than `old`) and reads its plaintext.
async fn wait_for_new_key(
    target: &Target,
    api: &Api<Instance>,
    args: &KeyArgs,
    old: Option<&str>,
) -> Result<IssuedKey, Error> {
    let status = wait(args.wait_seconds, "the operator to issue the key", || async {
        let instance = api.get(&args.instance).await?;
        Ok(issued(&instance, &args.name).filter(|k| Some(k.public_id.as_str()) != old).cloned())
    })
    .await?;
    if status.secret.store != SecretStore::Secret {
        return Err(Error::Usage(format!(
            "key {} is kept in Vault at {} (field {}): read it there, once",
            args.name, status.secret.name, status.secret.key
        )));
    }
    let key = read_key(target, &status).await?;
    Ok(IssuedKey {
        instance: args.instance.clone(),
        namespace: target.namespace.clone(),
        name: args.name.clone(),
        public_id: status.public_id,
        key,
    })
}

/// The plaintext of an issued key, from its Secret in the Instance's namespace.
pub async fn read_key(target: &Target, status: &ApiKeyStatus) -> Result<String, Error> {
    let secret = Api::<Secret>::namespaced(target.client.clone(), &target.namespace)
        .get_opt(&status.secret.name)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "Secret",
            name: status.secret.name.clone(),
            namespace: target.namespace.clone(),
        })?;
    let bytes = secret.data.as_ref().and_then(|d| d.get(&status.secret.key)).ok_or_else(|| {
        Error::Usage(format!(
            "the Secret {} holds no `{}`: the key was already taken",
            status.secret.name, status.secret.key
        ))
    })?;
    String::from_utf8(bytes.0.clone())
        .map_err(|_| Error::Usage(format!("the Secret {} is not text", status.secret.name)))
}

/// Polls `check` every 250 ms until it yields, for at most `seconds`.
pub async fn wait<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Error>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Timeout(format!(
                "waited {seconds} s for {what}: is cmp-operator running? `kubectl describe instance` shows its conditions"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_entry_names_only_that_key() {
        let patch = entry_patch("bot", "prod", false);
        assert_eq!(patch["spec"]["apiKeys"], json!([{"name": "prod"}]));
        assert_eq!(entry_patch("bot", "prod", true)["spec"]["apiKeys"], json!([{"name": "prod", "revoked": true}]));
        assert_eq!(manager("prod"), "kubectl-cmp-key-prod");
    }

    #[test]
    fn a_removal_tests_the_name_at_its_index_first() {
        let patch = removal_patch(2, "prod");
        assert_eq!(patch[0], json!({"op": "test", "path": "/spec/apiKeys/2/name", "value": "prod"}));
        assert_eq!(patch[1], json!({"op": "remove", "path": "/spec/apiKeys/2"}));
    }
}
