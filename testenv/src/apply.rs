//! Server-side apply of YAML documents of any kind.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};

use crate::Error;

/// How to apply.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// The field manager.
    pub field_manager: String,
    /// Validate and admit, but do not persist (`dryRun=All`).
    pub dry_run: bool,
    /// Put namespaced objects in this namespace instead of their own.
    pub namespace: Option<String>,
}

/// Parses a multi-document YAML stream (empty documents are skipped).
pub fn parse_documents(source_name: &str, yaml: &str) -> Result<Vec<DynamicObject>, Error> {
    use serde::Deserialize;
    let mut objects = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = serde_yaml::Value::deserialize(document).map_err(|e| Error::Document {
            source_name: source_name.to_string(),
            index: index + 1,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_yaml::from_value(value).map_err(|e| Error::Document {
            source_name: source_name.to_string(),
            index: index + 1,
            message: e.to_string(),
        })?;
        objects.push(object);
    }
    Ok(objects)
}

/// Applies one object with server-side apply (forcing conflicts, as
/// `kubectl apply --server-side --force-conflicts` does) and returns what
/// the server stored (or would store, in a dry run).
pub async fn apply_object(
    client: &kube::Client,
    object: &DynamicObject,
    options: &ApplyOptions,
) -> Result<DynamicObject, Error> {
    let types = object.types.as_ref().ok_or_else(|| Error::Document {
        source_name: object.metadata.name.clone().unwrap_or_default(),
        index: 0,
        message: "the object has no apiVersion/kind".into(),
    })?;
    let gvk = GroupVersionKind::try_from(types).map_err(|e| Error::Document {
        source_name: types.kind.clone(),
        index: 0,
        message: e.to_string(),
    })?;
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk).await?;
    let name = object.metadata.name.clone().unwrap_or_default();
    let mut object = object.clone();
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            if let Some(ns) = &options.namespace {
                object.metadata.namespace = Some(ns.clone());
            }
            let ns = object.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            Api::namespaced_with(client.clone(), &ns, &resource)
        }
    };
    let mut params = PatchParams::apply(&options.field_manager).force();
    params.dry_run = options.dry_run;
    Ok(api.patch(&name, &params, &Patch::Apply(&object)).await?)
}

/// Applies every document of a YAML stream, in order.
pub async fn apply_yaml(
    client: &kube::Client,
    source_name: &str,
    yaml: &str,
    options: &ApplyOptions,
) -> Result<Vec<DynamicObject>, Error> {
    let mut applied = Vec::new();
    for object in parse_documents(source_name, yaml)? {
        applied.push(apply_object(client, &object, options).await?);
    }
    Ok(applied)
}

/// Installs (server-side applies) CustomResourceDefinitions and waits until
/// the API server serves each of them (`Established`).
pub async fn install_crds(
    client: &kube::Client,
    crds: &[k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition],
    field_manager: &str,
) -> Result<(), Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::wait::{await_condition, conditions};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(field_manager).force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd)).await?;
    }
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(std::time::Duration::from_secs(60), established).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Error::Document {
                    source_name: name,
                    index: 0,
                    message: format!("waiting for Established: {e}"),
                });
            }
            Err(_) => {
                return Err(Error::Document {
                    source_name: name,
                    index: 0,
                    message: "not Established after 60s".into(),
                });
            }
        }
    }
    Ok(())
}
