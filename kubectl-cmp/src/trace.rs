//! `kubectl cmp trace <order | instance>`: from a Saleor order (or an
//! Instance) through its Organization and Wallet, the Instance, its GitOps
//! commit and Argo CD Application, to the runtime, each link with its state.
//! The first link that is not Ok is the first thing to look at.

use cmp_crds::names::{SALEOR_ORDER_ID_ANNOTATION, SALEOR_ORDER_NUMBER_ANNOTATION, organization_of_control_namespace};
use cmp_crds::{Instance, Organization, Wallet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde::Serialize;

use crate::error::Error;
use crate::output::{Format, print};
use crate::{Outcome, Target};

/// How a link stands.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum State {
    Ok,
    Pending,
    Failed,
    /// Not part of this chain (a Shared Instance has no commit), or not installed.
    Skipped,
}

/// One link of the chain.
#[derive(Debug, Serialize, PartialEq)]
pub struct Link {
    pub link: String,
    pub state: State,
    pub detail: String,
}

fn link(name: impl Into<String>, state: State, detail: impl Into<String>) -> Link {
    Link { link: name.into(), state, detail: detail.into() }
}

/// A link from a condition: True is Ok, False is Failed with its reason, absent or Unknown is Pending (pure).
pub fn from_condition(name: String, conditions: &[Condition], type_: &str, generation: Option<i64>) -> Link {
    match cmp_crds::conditions::find(conditions, type_) {
        Some(c) if c.status == "True" && (generation.is_none() || c.observed_generation == generation) => {
            link(name, State::Ok, format!("{type_}: {}", c.message))
        }
        Some(c) if c.status == "True" => {
            link(name, State::Pending, format!("{type_} is for an older generation; the operator has not caught up"))
        }
        Some(c) if c.status == "False" => {
            link(name, State::Failed, format!("{type_} False, {}: {}", c.reason, c.message))
        }
        Some(c) => link(name, State::Pending, format!("{type_} {}, {}: {}", c.status, c.reason, c.message)),
        None => link(name, State::Pending, format!("no {type_} condition yet: is cmp-operator running?")),
    }
}

/// The links of one Instance's chain, from what was read (pure).
pub fn chain(
    instance: &Instance,
    organization: Option<&Organization>,
    wallet: Option<&Wallet>,
    application: Option<Result<&DynamicObject, String>>,
) -> Vec<Link> {
    let namespace = instance.namespace().unwrap_or_default();
    let org_name = organization_of_control_namespace(&namespace).unwrap_or("?").to_string();
    let annotations = instance.annotations();
    let order = annotations.get(SALEOR_ORDER_ID_ANNOTATION);
    let mut links = Vec::new();
    if let Some(order) = order {
        let number =
            annotations.get(SALEOR_ORDER_NUMBER_ANNOTATION).map(|n| format!(" (number {n})")).unwrap_or_default();
        links.push(match cmp_crds::suspension::by_store(instance) {
            Some(why) => link(
                format!("Saleor order {order}"),
                State::Failed,
                format!("withdrawn by the store ({why}){number}: the Instance is suspended, and only the store's provisioner lifts that"),
            ),
            None => link(format!("Saleor order {order}"), State::Ok, format!("provisioned{number}")),
        });
    }
    links.push(match organization {
        Some(o) => from_condition(
            format!("Organization {org_name}"),
            o.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default(),
            "Ready",
            o.metadata.generation,
        ),
        None => link(format!("Organization {org_name}"), State::Failed, "not found"),
    });
    links.push(match wallet {
        Some(w) => {
            let status = w.status.clone().unwrap_or_default();
            let mut funded =
                from_condition(format!("Wallet {namespace}/{}", w.name_any()), &status.conditions, "Funded", None);
            funded.detail = format!("balance {}; {}", status.balance, funded.detail);
            if let Some(order) = order {
                match w.spec.grants.iter().find(|g| g.order_ref.as_deref() == Some(order.as_str())) {
                    Some(g) => {
                        funded.detail.push_str(&format!("; grant {} of {} credits for the order", g.id, g.credits))
                    }
                    None => funded.detail.push_str("; no grant for this order (a plan without credits?)"),
                }
            }
            funded
        }
        None => link(
            format!("Wallet of {org_name}"),
            State::Failed,
            "not found: the operator creates it with the Organization",
        ),
    });
    let status = instance.status.clone().unwrap_or_default();
    let name = format!("Instance {namespace}/{}", instance.name_any());
    // Synced, once the operator got that far; before it (a reference that does not resolve), Ready says why.
    let stage = if cmp_crds::conditions::find(&status.conditions, "Synced").is_some() { "Synced" } else { "Ready" };
    let mut synced = from_condition(name, &status.conditions, stage, instance.metadata.generation);
    synced.detail = format!("phase {:?}; {}", status.phase, synced.detail);
    links.push(synced);
    match &status.gitops {
        Some(g) => {
            let short: String = g.commit.chars().take(12).collect();
            links.push(link(format!("commit {short}"), State::Ok, format!("{} in {}", g.path, g.repo)));
            let runtime = status.runtime_namespace.clone().unwrap_or_default();
            links.push(match application {
                Some(Ok(app)) => application_link(app, &g.commit),
                Some(Err(why)) => link(format!("Argo CD Application {runtime}"), State::Skipped, why),
                None => link(format!("Argo CD Application {runtime}"), State::Skipped, "not looked up"),
            });
        }
        None => links.push(link(
            "commit",
            State::Skipped,
            "no GitOps commit: none for a Shared Instance; a Dedicated one gets it once Synced",
        )),
    }
    links.push(from_condition(
        format!("runtime {}", status.runtime_namespace.clone().or(status.endpoint.clone()).unwrap_or_default()),
        &status.conditions,
        "Ready",
        instance.metadata.generation,
    ));
    links
}

/// An Argo CD Application's link: Synced at a revision and Healthy is Ok (pure).
fn application_link(app: &DynamicObject, commit: &str) -> Link {
    let name = format!("Argo CD Application {}/{}", app.namespace().unwrap_or_default(), app.name_any());
    let sync = app.data["status"]["sync"]["status"].as_str().unwrap_or("Unknown");
    let revision = app.data["status"]["sync"]["revision"].as_str().unwrap_or("");
    let health = app.data["status"]["health"]["status"].as_str().unwrap_or("Unknown");
    let detail = format!("sync {sync} at {}, health {health}", revision.chars().take(12).collect::<String>());
    let state = match (sync, health) {
        ("Synced", "Healthy") => State::Ok,
        (_, "Degraded") => State::Failed,
        _ => State::Pending,
    };
    let detail = if state != State::Ok && revision != commit && !revision.is_empty() {
        format!("{detail}; not yet at the Instance's commit")
    } else {
        detail
    };
    link(name, state, detail)
}

/// The chain for people: one line a link, the first wrong one marked (pure).
pub fn text(links: &[Link]) -> String {
    let first_wrong = links.iter().position(|l| matches!(l.state, State::Pending | State::Failed));
    let mut out = String::new();
    for (i, l) in links.iter().enumerate() {
        let mark = if Some(i) == first_wrong { "  <- the first thing to look at" } else { "" };
        out.push_str(&format!("{:<8} {}: {}{mark}\n", format!("{:?}", l.state), l.link, l.detail));
    }
    out
}

pub async fn trace(target: &Target, what: &str, argocd_namespace: &str, format: Format) -> Result<Outcome, Error> {
    let client = &target.client;
    let instances = match Api::<Instance>::namespaced(client.clone(), &target.namespace).get_opt(what).await? {
        Some(instance) => vec![instance],
        None => {
            let all = Api::<Instance>::all(client.clone()).list(&ListParams::default()).await?.items;
            let of_order: Vec<Instance> = all
                .into_iter()
                .filter(|i| {
                    let a = i.annotations();
                    a.get(SALEOR_ORDER_ID_ANNOTATION).map(String::as_str) == Some(what)
                        || a.get(SALEOR_ORDER_NUMBER_ANNOTATION).map(String::as_str) == Some(what)
                })
                .collect();
            if of_order.is_empty() {
                return Err(Error::Usage(format!(
                    "no Instance {what} in namespace {} and no Saleor order {what} (by id or number): pass -n, or check the order in the webhook's log",
                    target.namespace
                )));
            }
            of_order
        }
    };
    let app_resource = ApiResource::from_gvk(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"));
    let mut chains = Vec::new();
    for instance in &instances {
        let namespace = instance.namespace().unwrap_or_default();
        let org = organization_of_control_namespace(&namespace).unwrap_or_default().to_string();
        let organization = Api::<Organization>::all(client.clone()).get_opt(&org).await?;
        let wallet =
            Api::<Wallet>::namespaced(client.clone(), &namespace).get_opt(&cmp_crds::names::wallet_name(&org)).await?;
        let runtime = instance.status.as_ref().and_then(|s| s.runtime_namespace.clone()).unwrap_or_default();
        let apps = Api::<DynamicObject>::namespaced_with(client.clone(), argocd_namespace, &app_resource);
        // The operator names a Project's Application after its runtime namespace.
        let application = match apps.get_opt(&runtime).await {
            Ok(Some(app)) => Ok(app),
            Ok(None) => Err(format!(
                "no Application {argocd_namespace}/{runtime}: is the operator run with --argocd-namespace?"
            )),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                Err("Argo CD is not installed (no Application kind)".to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        chains.push(chain(
            instance,
            organization.as_ref(),
            wallet.as_ref(),
            Some(application.as_ref().map_err(Clone::clone)),
        ));
    }
    let problem = chains.iter().flatten().any(|l| matches!(l.state, State::Pending | State::Failed));
    print(format, &chains, |chains| chains.iter().map(|c| text(c)).collect::<Vec<_>>().join("\n"))?;
    Ok(if problem { Outcome::Problem } else { Outcome::Done })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(status: serde_json::Value) -> Instance {
        serde_json::from_value(json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": "bot", "namespace": "cmp-acme", "generation": 2,
                         "annotations": {SALEOR_ORDER_ID_ANNOTATION: "T3JkZXI6MQ==", SALEOR_ORDER_NUMBER_ANNOTATION: "17"}},
            "spec": {"project": "p", "offering": "o", "version": "1", "plan": "pro"},
            "status": status
        }))
        .expect("an Instance")
    }

    fn condition(type_: &str, status: &str, reason: &str, generation: i64) -> serde_json::Value {
        json!({"type": type_, "status": status, "reason": reason, "message": "m", "observedGeneration": generation,
               "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn the_first_wrong_link_of_a_dedicated_chain_is_marked() {
        let i = instance(json!({
            "runtimeNamespace": "cmp-acme-p",
            "gitops": {"repo": "file:///r", "path": "tenants/acme/p/bot", "commit": "0123456789abcdef"},
            "conditions": [condition("Synced", "True", "Pushed", 2), condition("Ready", "False", "RuntimeUnavailable", 2)]
        }));
        let links = chain(&i, None, None, Some(Err("Argo CD is not installed".into())));
        let states: Vec<State> = links.iter().map(|l| l.state).collect();
        assert_eq!(
            states,
            [State::Ok, State::Failed, State::Failed, State::Ok, State::Ok, State::Skipped, State::Failed],
            "{links:#?}"
        );
        assert_eq!(links[3].link, "Instance cmp-acme/bot");
        assert_eq!(links[4].link, "commit 0123456789ab");
        let shown = text(&links);
        assert!(shown.lines().nth(1).is_some_and(|l| l.ends_with("<- the first thing to look at")), "{shown}");
        assert_eq!(shown.matches("first thing").count(), 1, "{shown}");
    }

    #[test]
    fn an_order_the_store_withdrew_is_the_first_thing_to_look_at() {
        let mut i = instance(json!({
            "phase": "Suspended",
            "conditions": [condition("Synced", "True", "Pushed", 2), condition("Ready", "False", "SuspendedByStore", 2)]
        }));
        i.annotations_mut().insert(cmp_crds::names::STORE_SUSPENSION_ANNOTATION.into(), "order #17 cancelled".into());
        let links = chain(&i, None, None, None);
        assert_eq!(links[0].state, State::Failed, "{links:#?}");
        assert!(links[0].detail.contains("withdrawn by the store (order #17 cancelled)"), "{}", links[0].detail);
        let runtime = links.last().expect("the runtime link");
        assert_eq!(runtime.state, State::Failed, "a suspended Instance does not serve: {runtime:?}");
        assert!(runtime.detail.contains("SuspendedByStore"), "{}", runtime.detail);
    }

    #[test]
    fn a_condition_of_an_older_generation_is_pending() {
        let c: Condition = serde_json::from_value(condition("Ready", "True", "Ready", 1)).expect("a condition");
        assert_eq!(from_condition("x".into(), std::slice::from_ref(&c), "Ready", Some(2)).state, State::Pending);
        assert_eq!(from_condition("x".into(), &[c], "Ready", Some(1)).state, State::Ok);
        assert_eq!(from_condition("x".into(), &[], "Ready", Some(1)).state, State::Pending);
    }

    #[test]
    fn an_application_synced_and_healthy_is_ok_and_degraded_is_failed() {
        let app = |sync: &str, health: &str| -> DynamicObject {
            serde_json::from_value(json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                "metadata": {"name": "cmp-acme-p", "namespace": "argocd"},
                "status": {"sync": {"status": sync, "revision": "abc"}, "health": {"status": health}}}))
            .expect("an Application")
        };
        assert_eq!(application_link(&app("Synced", "Healthy"), "abc").state, State::Ok);
        assert_eq!(application_link(&app("Synced", "Degraded"), "abc").state, State::Failed);
        let behind = application_link(&app("OutOfSync", "Progressing"), "def");
        assert_eq!(behind.state, State::Pending);
        assert!(behind.detail.contains("not yet at the Instance's commit"), "{}", behind.detail);
    }
}
