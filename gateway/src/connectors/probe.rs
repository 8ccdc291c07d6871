//! Probes of the bindings' MCP servers, for status. Only the gateway holds
//! the tenants' credentials, so only it can tell whether a binding's server
//! answers: it calls `initialize`, then `tools/list` (every page), then ends
//! the session, with the binding's own credential and through the same
//! egress checks as a call. Nothing is charged and no tool is called.
//!
//! A binding is probed when its status has no probe of it as it is now
//! ([`fingerprint`]: a new or moved binding is probed within a tick), and
//! again every `--connector-probe-seconds` (30 s after a probe that failed,
//! if that is sooner). The replicas share no plan:
//! `status.connectorProbes` is the record, so whichever replica finds a
//! probe due first makes it, and the others see it in their caches. Each
//! waits a random part of a tick first, so they seldom probe together.
//! A replica also remembers the probes it made whose write did not land
//! ([`Unwritten`]): they count as made, so a binding is not probed again
//! before its interval while the status cannot be written (RBAC, the API
//! server away), and the write is tried again once per [`RETRY`], not every
//! tick.
//! The gateway writes `status.connectorProbes` alone (field manager
//! [`FIELD_MANAGER`], server-side apply of the whole list of an Instance);
//! the operator reads it into `ConnectorsReady`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use cmp_crds::Instance;
use cmp_crds::connectors::fingerprint;
use cmp_crds::instance::{ConnectorBinding, ConnectorDestination, ConnectorProbe};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::upstream::{self, Outgoing, PROTOCOL_HEADER, SESSION_HEADER};
use crate::state::Gateway;

/// The field manager of `status.connectorProbes`.
pub const FIELD_MANAGER: &str = cmp_crds::names::GATEWAY_PROBE_FIELD_MANAGER;
/// How often the caches are looked at for probes that are due.
const TICK: Duration = Duration::from_secs(5);
/// How many probes run at once.
const CONCURRENT: usize = 4;
/// The most `tools/list` pages read.
const MAX_PAGES: usize = 20;
/// The most tool names kept (the schema's bound).
const MAX_TOOLS: usize = 500;
/// How soon a probe that failed is made again (or `--connector-probe-seconds`, if that is sooner).
const RETRY: Duration = Duration::from_secs(30);
/// The protocol revision probes speak.
const REVISION: &str = "2025-06-18";

/// Probes this replica made whose status write has not landed, and when it last failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The probes the write held.
    pub probes: Vec<ConnectorProbe>,
    /// When the write failed.
    pub failed_at: Timestamp,
}

/// The [`Pending`] probes of each Instance, kept by the probing loop.
#[derive(Debug, Default)]
pub struct Unwritten(Mutex<HashMap<ObjectRef<Instance>, Pending>>);

impl Unwritten {
    fn get(&self, instance: &Instance) -> Option<Pending> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(&ObjectRef::from_obj(instance)).cloned()
    }

    fn set(&self, instance: &Instance, pending: Option<Pending>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match pending {
            Some(pending) => map.insert(ObjectRef::from_obj(instance), pending),
            None => map.remove(&ObjectRef::from_obj(instance)),
        };
    }

    /// Forgets the Instances that are gone.
    fn keep_only(&self, instances: &[Arc<Instance>]) {
        let present: std::collections::HashSet<_> = instances.iter().map(|i| ObjectRef::from_obj(&**i)).collect();
        self.0.lock().unwrap_or_else(PoisonError::into_inner).retain(|key, _| present.contains(key));
    }
}

/// The bindings of `instance` whose probe is due at `now`, and whether its probes need writing even if none is
/// (a probe of a binding that is gone or no longer callable, or probes made here whose write failed, once
/// [`RETRY`] has passed since). `pending` counts as probes made.
pub fn due<'a>(
    instance: &'a Instance,
    pending: Option<&Pending>,
    every: Duration,
    now: Timestamp,
) -> (Vec<&'a ConnectorBinding>, bool) {
    let status = instance.status.as_ref();
    let written = status.map(|s| s.connector_probes.as_slice()).unwrap_or_default();
    let made = pending.map(|p| p.probes.as_slice()).unwrap_or_default();
    let callable: Vec<&ConnectorBinding> = instance.spec.connectors.iter().filter(|b| callable(instance, b)).collect();
    let after = |period: Duration| SignedDuration::try_from(period).unwrap_or(SignedDuration::MAX);
    let again = |answered: bool| after(if answered { every } else { every.min(RETRY) });
    let due = callable
        .iter()
        .copied()
        .filter(|binding| {
            let print = fingerprint(binding);
            !written.iter().chain(made).any(|p| {
                p.name == binding.name
                    && p.binding == print
                    && p.probed_at.0.saturating_add(again(p.answered)).is_ok_and(|next| next > now)
            })
        })
        .collect();
    let stale = written.iter().any(|p| !callable.iter().any(|b| b.name == p.name));
    let retry_write = pending.is_none_or(|p| p.failed_at.saturating_add(after(RETRY)).is_ok_and(|next| next <= now));
    (due, (stale || pending.is_some()) && retry_write)
}

/// The probes to write: those just made, then those made here earlier whose write failed (for bindings still
/// callable as they were, unless the status holds a later probe of them).
fn with_pending(instance: &Instance, mut new: Vec<ConnectorProbe>, pending: Option<Pending>) -> Vec<ConnectorProbe> {
    let written = instance.status.as_ref().map(|s| s.connector_probes.as_slice()).unwrap_or_default();
    for earlier in pending.map(|p| p.probes).unwrap_or_default() {
        let current = instance
            .spec
            .connectors
            .iter()
            .any(|b| b.name == earlier.name && fingerprint(b) == earlier.binding && callable(instance, b));
        let superseded = new.iter().any(|p| p.name == earlier.name)
            || written
                .iter()
                .any(|p| p.name == earlier.name && p.binding == earlier.binding && p.probed_at >= earlier.probed_at);
        if current && !superseded {
            new.push(earlier);
        }
    }
    new
}

/// Whether the binding is probed: its host is on the allow-list, as the operator found. One whose addresses a probe
/// found denied is probed again, as DNS may change (the gateway checks the addresses on every call anyway).
fn callable(instance: &Instance, binding: &ConnectorBinding) -> bool {
    let connectors = instance.status.as_ref().map(|s| s.connectors.as_slice()).unwrap_or_default();
    connectors.iter().any(|c| {
        c.name == binding.name
            && matches!(c.destination, Some(ConnectorDestination::Allowed | ConnectorDestination::Denied))
    })
}

/// The probes to write for `instance`: the new ones, and the earlier ones still of a callable binding as it is.
pub fn merged(instance: &Instance, new: Vec<ConnectorProbe>) -> Vec<ConnectorProbe> {
    let earlier = instance.status.as_ref().map(|s| s.connector_probes.as_slice()).unwrap_or_default();
    let mut probes = new;
    for binding in instance.spec.connectors.iter().filter(|b| callable(instance, b)) {
        if probes.iter().any(|p| p.name == binding.name) {
            continue;
        }
        if let Some(kept) = earlier.iter().find(|p| p.name == binding.name && p.binding == fingerprint(binding)) {
            probes.push(kept.clone());
        }
    }
    probes.sort_by(|a, b| a.name.cmp(&b.name));
    probes
}

/// Which Organizations' bindings this gateway probes: those whose labels hold every `key=value` of
/// `--connector-probe-organization-selector` (all, when it is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrganizationSelector(std::collections::BTreeMap<String, String>);

impl std::str::FromStr for OrganizationSelector {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut labels = std::collections::BTreeMap::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, value) = term.split_once("==").or_else(|| term.split_once('=')).ok_or_else(|| {
                format!("{term:?} is not key=value: only equality selectors such as team=support are supported")
            })?;
            if key.is_empty() || key.ends_with('!') {
                return Err(format!("{term:?} is not key=value: only equality selectors are supported"));
            }
            labels.insert(key.trim().to_string(), value.trim().to_string());
        }
        Ok(Self(labels))
    }
}

impl OrganizationSelector {
    /// Whether `instance`'s Organization (as the gateway's cache holds it) is selected.
    fn selects(&self, gateway: &Gateway, instance: &Instance) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let namespace = instance.namespace().unwrap_or_default();
        let Some(name) = cmp_crds::names::organization_of_control_namespace(&namespace) else { return false };
        let Some(organization) = gateway.directory.organization(name) else { return false };
        let labels = organization.labels();
        self.0.iter().all(|(key, value)| labels.get(key) == Some(value))
    }
}

/// Probes due bindings of the selected Organizations until the process stops.
pub async fn keep_probing(
    gateway: Arc<Gateway>,
    client: kube::Client,
    every: Duration,
    selector: OrganizationSelector,
) {
    tracing::info!(every_seconds = every.as_secs(), ?selector, "probing the connector bindings' MCP servers");
    let unwritten = Arc::new(Unwritten::default());
    loop {
        tokio::time::sleep(TICK).await;
        let instances = gateway.directory.instances.state();
        unwritten.keep_only(&instances);
        let due_ones: Vec<Arc<Instance>> = instances
            .into_iter()
            .filter(|i| selector.selects(&gateway, i))
            .filter(|i| {
                let (due, write) = due(i, unwritten.get(i).as_ref(), every, Timestamp::now());
                !due.is_empty() || write
            })
            .collect();
        if due_ones.is_empty() {
            continue;
        }
        // Another replica may be about to probe the same bindings: wait a random part of a tick, then look again.
        let jitter = Duration::from_millis(rand::random::<u64>() % TICK.as_millis() as u64);
        tokio::time::sleep(jitter).await;
        futures::stream::iter(due_ones)
            .for_each_concurrent(CONCURRENT, |stale| {
                let (gateway, client, unwritten) = (gateway.clone(), client.clone(), unwritten.clone());
                async move {
                    let key = ObjectRef::from_obj(&*stale);
                    let Some(instance) = gateway.directory.instances.get(&key) else { return };
                    probe_instance(&gateway, &client, &instance, every, &unwritten).await;
                }
            })
            .await;
    }
}

async fn probe_instance(
    gateway: &Gateway,
    client: &kube::Client,
    instance: &Instance,
    every: Duration,
    unwritten: &Unwritten,
) {
    let pending = unwritten.get(instance);
    let (due, write) = due(instance, pending.as_ref(), every, Timestamp::now());
    if due.is_empty() && !write {
        return;
    }
    let mut new = Vec::new();
    for binding in due {
        let probe = probe(gateway, instance, binding).await;
        gateway.metrics.connector_probe(if probe.answered { "answered" } else { "failed" });
        tracing::debug!(instance = %instance.name_any(), binding = %binding.name, answered = probe.answered,
                        tools = probe.tools.len(), message = %probe.message, "probed a connector binding");
        new.push(probe);
    }
    let made = with_pending(instance, new, pending);
    let probes = merged(instance, made.clone());
    let namespace = instance.namespace().unwrap_or_default();
    let patch = json!({
        "apiVersion": Instance::api_version(&()), "kind": Instance::kind(&()),
        "metadata": {"name": instance.name_any(), "namespace": namespace},
        "status": {"connectorProbes": probes},
    });
    let api = Api::<Instance>::namespaced(client.clone(), &namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(&instance.name_any(), &params, &Patch::Apply(patch)).await {
        Ok(_) => unwritten.set(instance, None),
        Err(error) => {
            tracing::warn!(%error, instance = %instance.name_any(), %namespace, retry_seconds = RETRY.as_secs(),
                           "writing the connector probes failed; they are kept and written again later");
            unwritten.set(instance, Some(Pending { probes: made, failed_at: Timestamp::now() }));
        }
    }
}

/// Probes `binding` of `instance`: what its server answered, with the binding's own credential.
pub async fn probe(gateway: &Gateway, instance: &Instance, binding: &ConnectorBinding) -> ConnectorProbe {
    let result = exchange(gateway, instance, binding).await;
    let (answered, tools, message, refused) = match result {
        Ok(tools) => (true, tools, String::new(), false),
        Err(Failure { message, refused }) => (false, Vec::new(), message.chars().take(1000).collect(), refused),
    };
    ConnectorProbe {
        name: binding.name.clone(),
        binding: fingerprint(binding),
        probed_at: Time(Timestamp::now()),
        answered,
        refused,
        tools,
        message,
    }
}

/// Why a probe got no answer, and whether the gateway refused to connect (nothing was sent).
struct Failure {
    message: String,
    refused: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self { message, refused: false }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

async fn exchange(gateway: &Gateway, instance: &Instance, binding: &ConnectorBinding) -> Result<Vec<String>, Failure> {
    let Some(connectors) = gateway.connectors.as_ref() else { return Err("the connector gateway is off".into()) };
    let url = binding.url.as_deref().ok_or("the binding has no url")?;
    let endpoint = instance.status.as_ref().and_then(|s| s.endpoint.as_deref());
    let internal = gateway.internal_endpoints(endpoint);
    let (client, url) = connectors
        .egress
        .client(url, &internal)
        .await
        .map_err(|refusal| Failure { message: refusal.to_string(), refused: true })?;
    let namespace = instance.namespace().unwrap_or_default();
    let organization = cmp_crds::names::organization_of_control_namespace(&namespace).unwrap_or_default();
    let (header, value) = connectors.credentials.presented(organization, &instance.spec.project, binding).await?;
    let timeout = Duration::from_secs(u64::try_from(binding.timeout_seconds.max(1)).unwrap_or(30));
    let send = |body: Value, id: Option<Value>, session: Option<String>| {
        let (client, url, header, value) = (&client, url.clone(), header.as_str(), value.as_str());
        async move {
            let out = Outgoing {
                client,
                url,
                body: Bytes::from(body.to_string()),
                credential: (header, value),
                session: session.as_deref(),
                passed: vec![(PROTOCOL_HEADER, REVISION)],
                id: id.as_ref(),
                timeout,
            };
            upstream::send(out).await.map_err(|failure| failure.to_string())
        }
    };
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": REVISION, "capabilities": {},
        "clientInfo": {"name": "cmp-gateway-probe", "version": env!("CARGO_PKG_VERSION")}}});
    let opened = send(initialize, Some(json!(1)), None).await?;
    answer_of(opened.message.as_ref(), "initialize")?;
    let session = opened.session;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    send(initialized, None, session.clone()).await?;
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let id = json!(2 + page);
        let params = cursor.as_ref().map_or_else(|| json!({}), |c| json!({"cursor": c}));
        let list = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params});
        let listed = send(list, Some(id), session.clone()).await?;
        let result = answer_of(listed.message.as_ref(), "tools/list")?;
        let names = result["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str());
        tools.extend(names.map(String::from));
        cursor = result["nextCursor"].as_str().map(String::from);
        if cursor.is_none() || tools.len() >= MAX_TOOLS {
            break;
        }
    }
    if let Some(session) = session {
        // Best effort: a server that keeps no sessions, or has forgotten this one, is fine.
        let _ = client.delete(url).header(header.as_str(), value.as_str()).header(SESSION_HEADER, session).send().await;
    }
    tools.sort();
    tools.dedup();
    tools.truncate(MAX_TOOLS);
    Ok(tools)
}

/// The result of a JSON-RPC answer, or why there is none.
fn answer_of<'a>(message: Option<&'a Value>, method: &str) -> Result<&'a Value, String> {
    let message = message.ok_or_else(|| format!("the MCP server sent no answer to {method}"))?;
    if let Some(error) = message.get("error") {
        let text = error["message"].as_str().unwrap_or("no message");
        return Err(format!("the MCP server refused {method}: {text}"));
    }
    message.get("result").ok_or_else(|| format!("the MCP server's answer to {method} has no result"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::instance::{ConnectorSecret, ConnectorStatus};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("a time")
    }

    fn instance(bindings: &[(&str, &str)], allowed: &[&str], probes: Vec<ConnectorProbe>) -> Instance {
        let connectors: Vec<Value> = bindings
            .iter()
            .map(|(name, url)| json!({"name": name, "type": "tickets", "url": url, "vaultPath": format!("connectors/acme/support/{name}")}))
            .collect();
        let mut instance: Instance = serde_json::from_value(json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": "bot", "namespace": "cmp-acme"},
            "spec": {"project": "support", "offering": "desk", "version": "1", "plan": "pro", "connectors": connectors},
        }))
        .expect("an Instance");
        let status = instance.status.get_or_insert_default();
        status.connectors = bindings
            .iter()
            .map(|(name, _)| ConnectorStatus {
                name: (*name).into(),
                vault_path: String::new(),
                secret: ConnectorSecret::Found,
                destination: Some(if allowed.contains(name) {
                    ConnectorDestination::Allowed
                } else {
                    ConnectorDestination::NotAllowed
                }),
                allowed_tools: vec![],
                message: String::new(),
            })
            .collect();
        status.connector_probes = probes;
        instance
    }

    fn probe_of(instance: &Instance, name: &str, secs: i64) -> ConnectorProbe {
        let binding = instance.spec.connectors.iter().find(|b| b.name == name).expect("the binding");
        ConnectorProbe {
            name: name.into(),
            binding: fingerprint(binding),
            probed_at: Time(at(secs)),
            answered: true,
            refused: false,
            tools: vec!["get_ticket".into()],
            message: String::new(),
        }
    }

    #[test]
    fn a_callable_binding_is_probed_when_new_moved_or_old_and_no_other_is() {
        let every = Duration::from_secs(300);
        let fresh = instance(&[("desk", "http://desk/mcp"), ("far", "http://far/mcp")], &["desk"], vec![]);
        let (due_now, stale) = due(&fresh, None, every, at(1000));
        assert_eq!(due_now.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["desk"], "far is off the allow-list");
        assert!(!stale);

        let probed = probe_of(&fresh, "desk", 1000);
        let seen = instance(&[("desk", "http://desk/mcp")], &["desk"], vec![probed.clone()]);
        assert!(due(&seen, None, every, at(1299)).0.is_empty(), "not again before the interval");
        assert_eq!(due(&seen, None, every, at(1300)).0.len(), 1, "again once it passed");

        let mut failed = probed.clone();
        failed.answered = false;
        let failing = instance(&[("desk", "http://desk/mcp")], &["desk"], vec![failed]);
        assert!(due(&failing, None, every, at(1029)).0.is_empty());
        assert_eq!(due(&failing, None, every, at(1030)).0.len(), 1, "a failed probe is retried after 30 s");

        let moved = instance(&[("desk", "http://desk-2/mcp")], &["desk"], vec![probed.clone()]);
        assert_eq!(
            due(&moved, None, every, at(1001)).0.len(),
            1,
            "a probe of the binding before it moved does not count"
        );

        let gone = instance(&[("other", "http://o/mcp")], &["other"], vec![probed]);
        let (_, stale) = due(&gone, None, every, at(1001));
        assert!(stale, "the probe of a removed binding is written away");
    }

    #[test]
    fn probes_whose_write_failed_count_as_made_and_the_write_is_tried_again_only_after_the_retry_period() {
        let every = Duration::from_secs(300);
        let fresh = instance(&[("desk", "http://desk/mcp")], &["desk"], vec![]);
        let made = probe_of(&fresh, "desk", 1000);
        let pending = Pending { probes: vec![made.clone()], failed_at: at(1000) };
        assert_eq!(due(&fresh, Some(&pending), every, at(1005)), (vec![], false), "neither probed nor written again");
        assert!(!due(&fresh, Some(&pending), every, at(1029)).1, "not written again before 30 s");
        let (again, write) = due(&fresh, Some(&pending), every, at(1030));
        assert!(again.is_empty() && write, "the write is tried again after 30 s, the probe is not");
        assert_eq!(due(&fresh, Some(&pending), every, at(1300)).0.len(), 1, "the next probe after the interval");

        assert_eq!(with_pending(&fresh, vec![], Some(pending.clone())), vec![made.clone()], "kept for the write");
        let moved = instance(&[("desk", "http://desk-2/mcp")], &["desk"], vec![]);
        assert!(with_pending(&moved, vec![], Some(pending.clone())).is_empty(), "not for a binding that moved");
        let mut later = made.clone();
        later.probed_at = Time(at(1010));
        let written_since = instance(&[("desk", "http://desk/mcp")], &["desk"], vec![later]);
        assert!(with_pending(&written_since, vec![], Some(pending)).is_empty(), "not over a later written probe");
    }

    #[test]
    fn an_organization_selector_is_equality_terms_and_says_what_it_refuses() {
        let selector: OrganizationSelector = "cmp.gsv.dev/test-run=r1, tier==gold".parse().expect("a selector");
        assert_eq!(selector.0.get("cmp.gsv.dev/test-run").map(String::as_str), Some("r1"));
        assert_eq!(selector.0.get("tier").map(String::as_str), Some("gold"));
        assert_eq!("".parse::<OrganizationSelector>(), Ok(OrganizationSelector::default()));
        for bad in ["tier!=gold", "tier in (gold)", "=x"] {
            let error = bad.parse::<OrganizationSelector>().expect_err(bad);
            assert!(error.contains("only equality"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_written_probes_are_the_new_ones_and_the_earlier_ones_of_the_bindings_as_they_are() {
        let base =
            instance(&[("a", "http://a/mcp"), ("b", "http://b/mcp"), ("c", "http://c/mcp")], &["a", "b"], vec![]);
        let (a, b) = (probe_of(&base, "a", 10), probe_of(&base, "b", 10));
        let mut stale_b = b.clone();
        stale_b.binding = "an earlier binding".into();
        let earlier = probe_of(&base, "c", 10);
        let with = instance(
            &[("a", "http://a/mcp"), ("b", "http://b/mcp"), ("c", "http://c/mcp")],
            &["a", "b"],
            vec![a.clone(), stale_b, earlier],
        );
        let mut newer_a = a.clone();
        newer_a.probed_at = Time(at(20));
        let written = merged(&with, vec![newer_a.clone()]);
        assert_eq!(written, vec![newer_a], "b's probe was of an earlier binding; c is not callable");
        assert_eq!(merged(&with, vec![b.clone()]), vec![a, b], "a's earlier probe is kept");
    }
}
