//! A Dedicated runtime's own API key ([`cmp_crds::runtime_key`]): the Secret
//! the operator writes in the runtime namespace, which the runtime reads as
//! `LANGFLOW_API_KEY` (the rendered Deployment names it; the key never goes
//! to git). Written when missing; replaced (deleted and created) when the
//! Offering's key was rotated, which the Secret's fingerprint annotation
//! tells without reading the key back. A running runtime reads its key at
//! start: after a rotation it takes the new one when its pod restarts.
//!
//! A Secret of that name that the operator did not write (no runtime key
//! label) is never overwritten or deleted: the Instance's `Ready` says so
//! (`RuntimeKeySecretForeign`), naming it and what to do.

use std::collections::BTreeMap;

use cmp_crds::Instance;
use cmp_crds::names::{API_KEY_LABEL, INSTANCE_LABEL, organization_of_control_namespace, owned_labels};
use cmp_crds::offering::{RuntimeMode, SecretKeyRef};
use cmp_crds::runtime_key::{FINGERPRINT_ANNOTATION, SECRET_DATA_KEY, fingerprint, for_instance, secret_name};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};

use super::references::Resolved;
use crate::context::Context;
use crate::error::{Error, Result};

/// The value of [`API_KEY_LABEL`] on a runtime key's Secret (the label puts it in the key Secrets' cache).
pub const RUNTIME_KEY_LABEL_VALUE: &str = "runtime";

/// The runtime key Secret an Instance needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeKeyWork {
    /// The runtime namespace.
    pub namespace: String,
    /// The Secret's name.
    pub name: String,
    /// Where the Offering's key is.
    pub offering_key: SecretKeyRef,
    /// The Instance's uid, which the key is derived with.
    pub instance_uid: String,
    /// The Secret's labels.
    pub labels: BTreeMap<String, String>,
}

/// The Secret a Dedicated Instance's runtime reads its key from, when its
/// Offering names a key (pure). A Shared runtime has the Offering's own.
pub fn wanted(instance: &Instance, resolved: &Resolved<'_>) -> Option<RuntimeKeyWork> {
    let runtime = &resolved.offering.spec.runtime;
    if runtime.mode != RuntimeMode::Dedicated {
        return None;
    }
    let offering_key = runtime.api_key_secret_ref.clone()?;
    let namespace = instance.namespace().unwrap_or_default();
    let organization = organization_of_control_namespace(&namespace)?;
    let mut labels = owned_labels(organization, Some(&instance.spec.project));
    labels.insert(INSTANCE_LABEL.into(), instance.name_any());
    labels.insert(API_KEY_LABEL.into(), RUNTIME_KEY_LABEL_VALUE.into());
    Some(RuntimeKeyWork {
        namespace: resolved.runtime_namespace.clone(),
        name: secret_name(&instance.name_any()),
        offering_key,
        instance_uid: instance.uid().unwrap_or_default(),
        labels,
    })
}

/// Writes the runtime's key Secret unless the one there (its fingerprint
/// `seen`, from the cache) already holds the key.
pub async fn ensure(work: &RuntimeKeyWork, seen: Option<String>, ctx: &Context) -> Result<()> {
    let offering_key = ctx.runtimes.api_key(ctx.secrets.as_ref(), &work.offering_key).await.map_err(Error::Runtime)?;
    let key = for_instance(&offering_key, &work.instance_uid);
    let wanted = fingerprint(&key);
    if seen.as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let (namespace, name) = (work.namespace.as_str(), work.name.as_str());
    if seen.is_some() {
        super::delete_secret(namespace, name, ctx).await?;
        tracing::info!(secret = name, namespace, "the Offering's key changed: replacing the runtime's key");
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(work.labels.clone()),
            annotations: Some([(FINGERPRINT_ANNOTATION.to_string(), wanted)].into()),
            ..Default::default()
        },
        string_data: Some([(SECRET_DATA_KEY.to_string(), key)].into()),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    ctx.metrics.write("Secret", "create");
    match Api::<Secret>::namespaced(ctx.applier.client().clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
    {
        Ok(_) => {
            tracing::info!(secret = name, namespace, "wrote the Dedicated runtime's key");
            Ok(())
        }
        // Written meanwhile by another reconcile (the next one compares its fingerprint), or by someone else.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            match written_by_the_operator(namespace, name, ctx).await? {
                Some(false) => Err(foreign(namespace, name)),
                Some(true) | None => Ok(()),
            }
        }
        Err(e) => Err(Error::kube(format!("creating the runtime key Secret {namespace}/{name}"))(e)),
    }
}

/// Deletes the runtime key Secret of the Instance `instance` in `namespace`
/// when the operator wrote it; a Secret of that name that someone else wrote
/// is left alone.
pub async fn remove(namespace: &str, instance: &str, ctx: &Context) -> Result<()> {
    let name = secret_name(instance);
    match written_by_the_operator(namespace, &name, ctx).await? {
        Some(true) => super::delete_secret(namespace, &name, ctx).await,
        Some(false) => {
            tracing::info!(secret = name, namespace, "leaving a Secret the operator did not write");
            Ok(())
        }
        None => Ok(()),
    }
}

/// Whether the Secret `namespace/name` carries the operator's runtime key label (read from the API: the
/// cache holds only labelled Secrets); `None` when there is none.
async fn written_by_the_operator(namespace: &str, name: &str, ctx: &Context) -> Result<Option<bool>> {
    let secret = Api::<Secret>::namespaced(ctx.applier.client().clone(), namespace)
        .get_metadata_opt(name)
        .await
        .map_err(Error::kube(format!("reading the runtime key Secret {namespace}/{name}")))?;
    Ok(secret.map(|s| s.labels().get(API_KEY_LABEL).map(String::as_str) == Some(RUNTIME_KEY_LABEL_VALUE)))
}

fn foreign(namespace: &str, name: &str) -> Error {
    Error::ForeignRuntimeKeySecret {
        namespace: namespace.into(),
        name: name.into(),
        label: API_KEY_LABEL,
        value: RUNTIME_KEY_LABEL_VALUE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::offering::RuntimeMode;

    fn resolved_for(offering: &cmp_crds::Offering) -> Resolved<'_> {
        Resolved { offering, version: &offering.spec.versions[0], runtime_namespace: "cmp-acme-support".into() }
    }

    #[test]
    fn a_dedicated_instance_gets_its_own_key_secret_in_the_runtime_namespace() {
        let instance = crate::fixtures::instance("support");
        let offering = crate::fixtures::offering(RuntimeMode::Dedicated, vec![crate::fixtures::version("1", false)]);
        let work = wanted(&instance, &resolved_for(&offering)).expect("a runtime key");
        assert_eq!((work.namespace.as_str(), work.name.as_str()), ("cmp-acme-support", "bot-runtime-key"));
        assert_eq!(work.instance_uid, "uid-1");
        assert_eq!(work.offering_key.name, "lfx");
        assert_eq!(work.labels[INSTANCE_LABEL], "bot");
        assert_eq!(work.labels[API_KEY_LABEL], RUNTIME_KEY_LABEL_VALUE);
    }

    #[test]
    fn a_shared_runtime_or_an_offering_without_a_key_needs_none() {
        let instance = crate::fixtures::instance("support");
        let shared = crate::fixtures::offering(RuntimeMode::Shared, vec![crate::fixtures::version("1", false)]);
        assert_eq!(wanted(&instance, &resolved_for(&shared)), None);
        let mut keyless = crate::fixtures::offering(RuntimeMode::Dedicated, vec![crate::fixtures::version("1", false)]);
        keyless.spec.runtime.api_key_secret_ref = None;
        assert_eq!(wanted(&instance, &resolved_for(&keyless)), None);
    }
}
