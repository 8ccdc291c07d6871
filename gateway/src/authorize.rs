//! Who may run what: pure checks of a presented API key against the
//! Instance it names, of the path's tenant, of suspensions and of the
//! runtime's readiness, from the objects in the watch caches. Each failure
//! is a [`Refusal`] with its stable code; nothing here calls the API server.

use cmp_crds::offering::{Plan, RuntimeApi, SecretKeyRef};
use cmp_crds::runnable::{self, NotRunnable, Serving};
use cmp_crds::{Instance, Offering, Organization, apikey};
use http::HeaderMap;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::refusal::{Code, Refusal};

/// The header that carries an API key when `Authorization` is not used.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The key presented with a request, from `Authorization: Bearer <key>` or
/// `x-api-key: <key>`. Any other `Authorization` scheme, or none, is 401.
pub fn presented_key(headers: &HeaderMap) -> Result<String, Refusal> {
    let bearer = headers.get(http::header::AUTHORIZATION).map(|v| {
        v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ").map(|k| k.trim().to_string())).ok_or_else(|| {
            Refusal::new(Code::InvalidApiKey, "the Authorization header must be `Bearer cmp_<id>_<secret>`")
        })
    });
    let header = headers.get(API_KEY_HEADER).map(|v| {
        v.to_str()
            .map(|s| s.trim().to_string())
            .map_err(|_| Refusal::new(Code::InvalidApiKey, "the x-api-key header is not text"))
    });
    match (bearer, header) {
        (Some(Ok(key)), _) | (None, Some(Ok(key))) => Ok(key),
        (Some(Err(refusal)), _) | (None, Some(Err(refusal))) => Err(refusal),
        (None, None) => Err(Refusal::new(
            Code::InvalidApiKey,
            "no API key: send `Authorization: Bearer cmp_<id>_<secret>` or `x-api-key: cmp_<id>_<secret>`",
        )),
    }
}

/// Checks `key` against the key `public_id` issued to `instance` (found by
/// the index). Returns the key's name.
pub fn check_key<'i>(instance: &'i Instance, key: &str, now: Timestamp) -> Result<&'i str, Refusal> {
    let unknown = || Refusal::new(Code::InvalidApiKey, "the API key is not valid: check it was copied whole");
    let parsed = apikey::parse(key).map_err(|e| Refusal::new(Code::InvalidApiKey, e.to_string()))?;
    let status = instance.status.as_ref().ok_or_else(unknown)?;
    let issued = status.api_keys.iter().find(|k| k.public_id == parsed.public_id).ok_or_else(unknown)?;
    if !apikey::verify(key, &issued.hash) {
        return Err(unknown());
    }
    let Some(spec) = instance.spec.api_keys.iter().find(|k| k.name == issued.name) else {
        return Err(Refusal::new(
            Code::KeyRevoked,
            "the API key was removed from its Instance: ask its owner for a new key",
        ));
    };
    if spec.revoked {
        return Err(Refusal::new(Code::KeyRevoked, "the API key was revoked: ask its owner for a new key"));
    }
    let expiry = spec.expires_at.as_ref().or(issued.expires_at.as_ref());
    if let Some(expires) = expiry.filter(|t| t.0 <= now) {
        return Err(Refusal::new(
            Code::KeyExpired,
            format!("the API key expired at {}: ask its owner for a new key", expires.0),
        ));
    }
    Ok(&issued.name)
}

/// The Instance a path names: `/v1/instances/{organization}/{instance}/runs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTarget {
    /// The Organization.
    pub organization: String,
    /// The Instance's name.
    pub instance: String,
}

/// Refuses a key used on a path that names another Instance.
pub fn check_tenant(instance: &Instance, path: Option<&PathTarget>) -> Result<(), Refusal> {
    let Some(path) = path else { return Ok(()) };
    let namespace = instance.namespace().unwrap_or_default();
    if namespace == cmp_crds::names::control_namespace(&path.organization) && instance.name_any() == path.instance {
        Ok(())
    } else {
        Err(Refusal::new(Code::WrongTenant, "the API key does not belong to the Instance this path names"))
    }
}

/// Everything the gateway needs to run an Instance's agent, from the CRs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTarget {
    /// The Organization.
    pub organization: String,
    /// The Project.
    pub project: String,
    /// The Instance's name.
    pub instance: String,
    /// The Instance's namespace (the Organization's control namespace).
    pub namespace: String,
    /// The Offering.
    pub offering: String,
    /// The version the runtime serves.
    pub version: String,
    /// The plan: price, rate limit and timeout.
    pub plan: Plan,
    /// The runtime's base URL.
    pub endpoint: String,
    /// The flow the runtime serves for the Instance.
    pub flow_id: String,
    /// The runtime's run API.
    pub api: RuntimeApi,
    /// Where the runtime's own API key is: the Offering's key (a Shared runtime's).
    pub runtime_key: Option<SecretKeyRef>,
    /// A Dedicated runtime's key is the Instance's own, derived from the Offering's with this Instance uid
    /// (`cmp_crds::runtime_key`); `None` for a Shared runtime.
    pub runtime_key_instance_uid: Option<String>,
    /// The Wallet that pays: (namespace, name).
    pub wallet: (String, String),
    /// Whether the Instance has connector bindings (its runs get a run token).
    pub has_connectors: bool,
    /// The inputs callers may send, as the served version declares them.
    pub inputs: Vec<cmp_crds::offering::CallerInput>,
    /// The buyer's settings (`spec.config` parsed against the version's `settings`), applied on every run.
    pub settings: Vec<(cmp_crds::offering::CallerInput, serde_json::Value)>,
}

/// Checks suspensions and readiness, and gathers what a run needs.
pub fn run_target(
    instance: &Instance,
    organization: Option<&Organization>,
    offering: Option<&Offering>,
) -> Result<RunTarget, Refusal> {
    let namespace = instance.namespace().unwrap_or_default();
    let org_name = cmp_crds::names::organization_of_control_namespace(&namespace).unwrap_or_default().to_string();
    let name = instance.name_any();
    let not_ready = |why: String| Refusal::new(Code::RuntimeNotReady, why);
    let Serving { endpoint, flow_id } = runnable::check(instance, organization).map_err(|e| match &e {
        NotRunnable::Suspended(_) => Refusal::new(Code::Suspended, e.message(instance)),
        NotRunnable::NotReady(_) => not_ready(e.message(instance)),
    })?;
    let status = instance.status.as_ref();
    let offering = offering
        .ok_or_else(|| not_ready(format!("Offering {} of Instance {name} was not found", instance.spec.offering)))?;
    let plan = offering.plan(&instance.spec.plan).cloned().ok_or_else(|| {
        not_ready(format!("plan {} is not in Offering {}", instance.spec.plan, instance.spec.offering))
    })?;
    let version = status.and_then(|s| s.version.clone()).unwrap_or_else(|| instance.spec.version.clone());
    let served = offering.spec.versions.iter().find(|v| v.name == version);
    let inputs = served.map(|v| v.inputs.clone()).unwrap_or_default();
    // Settings the config gets wrong are left out here; the operator reports them in status (ConfigApplied).
    let settings = served
        .filter(|_| !instance.spec.config.is_empty())
        .map(|v| {
            let (settings, _) = cmp_crds::inputs::parse_settings(&v.settings, &instance.spec.config);
            settings.into_iter().map(|(d, value)| (d.clone(), value)).collect()
        })
        .unwrap_or_default();
    Ok(RunTarget {
        wallet: (namespace.clone(), cmp_crds::names::wallet_name(&org_name)),
        organization: org_name,
        project: instance.spec.project.clone(),
        instance: name,
        namespace,
        offering: instance.spec.offering.clone(),
        version,
        plan,
        endpoint,
        flow_id,
        api: offering.spec.runtime.api,
        runtime_key: offering.spec.runtime.api_key_secret_ref.clone(),
        runtime_key_instance_uid: (offering.spec.runtime.mode == cmp_crds::offering::RuntimeMode::Dedicated)
            .then(|| instance.uid().unwrap_or_default()),
        // A knowledge base is searched through the connector gateway too, with the run's token.
        has_connectors: !instance.spec.connectors.is_empty() || offering.spec.knowledge.is_some(),
        inputs,
        settings,
    })
}

#[cfg(test)]
mod tests;
