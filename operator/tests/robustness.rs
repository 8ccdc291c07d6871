//! What a user gets when something is off: an object the operator cannot
//! read is reported on itself and breaks nothing for the others; an
//! Instance naming a missing Project says so in its status, not as a
//! warning in the log; logs written to a file carry no colour codes.

mod support;

use cmp_crds::{Instance, Project};
use cmp_testenv::test::eventually;
use k8s_openapi::api::events::v1::Event;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;
use support::{CONVERGE, World};

fn ready_reason(instance: &Instance) -> Option<(String, String)> {
    let ready = cmp_crds::conditions::find(&instance.status.as_ref()?.conditions, "Ready")?;
    Some((ready.reason.clone(), ready.message.clone()))
}

#[tokio::test]
async fn an_unreadable_instance_is_reported_on_itself_and_every_other_instance_goes_on() {
    let w = World::new("unreadable").await;
    let operator = w.operator("a", &[]);
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Unreadable"})).await;
    w.apply_project(&org, "p", json!({})).await;
    w.project_ready(&org, "p").await;
    let ns = format!("cmp-{org}");
    let instances = Api::<Instance>::namespaced(w.client.clone(), &ns);
    // Untyped, as kubectl sends it: the test's own client could not read the unreadable one back either.
    let untyped = Api::<DynamicObject>::namespaced_with(w.client.clone(), &ns, &ApiResource::erase::<Instance>(&()));
    let apply = |name: &'static str, spec: serde_json::Value| {
        let instances = untyped.clone();
        async move {
            let instance = json!({"apiVersion": Instance::api_version(&()), "kind": "Instance",
                                  "metadata": {"name": name}, "spec": spec});
            instances
                .patch(name, &PatchParams::apply("cmp-tests"), &Patch::Apply(instance))
                .await
                .unwrap_or_else(|e| panic!("applying Instance {name}: {e}"));
        }
    };
    // 9999-12-31 passes the API server's date-time check, but it is past the
    // latest instant the operator's time type can hold.
    apply(
        "broken",
        json!({"project": "p", "offering": "o", "version": "1", "plan": "basic",
               "apiKeys": [{"name": "k", "expiresAt": "9999-12-31T23:59:59Z"}]}),
    )
    .await;
    apply("good", json!({"project": "p", "offering": "o", "version": "1", "plan": "basic"})).await;
    apply("stray", json!({"project": "nope", "offering": "o", "version": "1", "plan": "basic"})).await;

    // Its Project resolves; the Offering "o" does not exist.
    let (reason, _) = eventually("the readable Instance to get its status", CONVERGE, || async {
        ready_reason(&instances.get("good").await.ok()?).filter(|(r, _)| r == "OfferingNotFound")
    })
    .await;
    assert_eq!(reason, "OfferingNotFound");
    let (_, message) = eventually("the stray Instance to say its Project is missing", CONVERGE, || async {
        ready_reason(&instances.get("stray").await.ok()?).filter(|(r, _)| r == "ProjectNotFound")
    })
    .await;
    assert!(message.contains("spec.project is \"nope\""), "{message}");
    eventually("the Project to count its one readable Instance", CONVERGE, || async {
        let project = w.projects(&org).get("p").await.ok()?;
        (project.status?.instance_count == 1).then_some(())
    })
    .await;

    let events = Api::<Event>::namespaced(w.client.clone(), &ns);
    let event = eventually("a Warning Event on the unreadable Instance", CONVERGE, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
                && e.reason.as_deref() == Some("InvalidObject")
        })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.unwrap_or_default();
    assert!(note.contains("cannot read this Instance") && note.contains("fix the field"), "{note}");
    let broken = untyped.get("broken").await.expect("still there");
    assert!(broken.data.get("status").is_none(), "nothing is written on an object the operator cannot read");

    let metrics = operator.metrics().await.expect("metrics");
    let series = "cmp_operator_reconcile_errors_total{kind=\"Instance\",reason=\"InvalidObject\"}";
    let counted = metrics.lines().any(|l| l.starts_with(series) && !l.ends_with(" 0"));
    assert!(counted, "{series} missing or still 0:\n{metrics}");

    let log = operator.log();
    assert!(!log.contains('\u{1b}'), "colour codes in a log written to a file:\n{log}");
    assert!(!log.contains("not found in local store"), "{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN") && l.contains("stray")).collect();
    assert!(warnings.is_empty(), "an expected state logged as a warning: {warnings:?}");

    let projects: Api<Project> = w.projects(&org);
    assert!(projects.get("p").await.is_ok());
    w.delete_org(&org).await;
}
