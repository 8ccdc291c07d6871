//! Writing a status, as the object's only writer: only when it changed,
//! with an Event when a watched condition transitions; and the status of a
//! failed reconcile (a pure function).

use cmp_crds::conditions::{self, NewCondition, READY, set_condition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;

use super::Reconcile;
use crate::apply::await_cached;
use crate::context::Context;
use crate::error::{Error, Result};

/// The status after `error`: the current one (for an object being deleted,
/// its terminating status) with `Ready=False`, the error's reason, and its
/// message (which says what to fix).
pub fn on_error<K: Reconcile>(object: &K, error: &Error, now: Timestamp) -> K::Status {
    let deleting = object.meta().deletion_timestamp.is_some();
    let mut status =
        deleting.then(|| object.terminating_status(now)).flatten().unwrap_or_else(|| object.operator_status());
    let failed = NewCondition::new(READY, false, error.reason(), error.to_string());
    set_condition(K::conditions(&mut status), failed, object.meta().generation, Time(now));
    status
}

/// Writes `next` when it differs from the object's status, waits until the
/// cache holds it, and publishes an Event for each watched condition whose
/// status or reason changed, unless it changed to a waiting reason
/// ([`conditions::is_waiting`]): True is a Normal Event, anything else a Warning.
pub async fn write<K: Reconcile>(object: &K, mut next: K::Status, ctx: &Context) -> Result<()> {
    let mut current = object.operator_status();
    if current == next {
        return Ok(());
    }
    let written = ctx.applier.apply_status(object, &next).await?;
    ctx.own_writes.record(object, written.clone());
    let mut key = ObjectRef::new(&object.meta().name.clone().unwrap_or_default());
    if let Some(ns) = object.meta().namespace.as_deref() {
        key = key.within(ns);
    }
    await_cached(&K::watched(&ctx.caches).store(), &key, written).await;
    for type_ in K::EVENT_CONDITIONS {
        let before = conditions::state(K::conditions(&mut current), type_);
        if let Some(after) = conditions::find(K::conditions(&mut next), type_)
            && before != Some((after.status.clone(), after.reason.clone()))
            && !conditions::is_waiting(&after.reason)
            && object.announces(after)
        {
            ctx.publish(object, after.status != conditions::TRUE, &after.reason, after.message.clone()).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::conditions::{FUNDED, reasons};
    use cmp_crds::{Organization, OrganizationSpec, Project, ProjectSpec, Wallet, WalletSpec};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn ready(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> (String, String, String) {
        let c = conditions::find(conditions, READY).expect("Ready");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn a_failed_cleanup_keeps_the_instance_terminating_with_the_error_and_settles() {
        let mut instance = cmp_crds::Instance::new(
            "bot",
            serde_json::from_value(serde_json::json!({"project": "p", "offering": "o", "version": "1", "plan": "b"}))
                .expect("spec"),
        );
        instance.metadata.deletion_timestamp = Some(Time(at(5)));
        let error = Error::Runtime("the runtime at http://127.0.0.1:9 did not answer".into());
        let status = on_error(&instance, &error, at(10));
        assert_eq!(status.phase, cmp_crds::instance::InstancePhase::Terminating);
        assert_eq!(ready(&status.conditions).1, reasons::RUNTIME_UNAVAILABLE);
        instance.status = Some(status.clone());
        assert_eq!(
            instance.terminating_status(at(20)),
            Some(status),
            "a retry writes nothing: the error stays until it is resolved"
        );
    }

    #[test]
    fn an_error_becomes_ready_false_with_its_reason_and_keeps_the_rest() {
        let mut project = Project::new("p", ProjectSpec::default());
        project.metadata.generation = Some(2);
        project.status = Some(cmp_crds::ProjectStatus { instance_count: 3, ..Default::default() });
        let error = Error::OrganizationNotFound { organization: "acme".into() };
        let status = on_error(&project, &error, at(10));
        let (state, reason, message) = ready(&status.conditions);
        assert_eq!((state.as_str(), reason.as_str()), ("False", reasons::ORGANIZATION_NOT_FOUND));
        assert!(message.contains("create it"), "{message}");
        assert_eq!(status.instance_count, 3, "what was known is kept");
    }

    #[test]
    fn a_wallet_error_reaches_its_conditions_without_touching_funded() {
        let mut wallet = Wallet::new("acme", WalletSpec::default());
        let mut status = cmp_crds::wallet::WalletStatus::default();
        set_condition(&mut status.conditions, NewCondition::new(FUNDED, true, "Funded", "5"), None, Time(at(1)));
        wallet.status = Some(status);
        let error = Error::Kube {
            action: "folding the stale meters of Wallet acme".into(),
            source: kube::Error::Api(Box::new(kube::core::Status::failure("no", "Forbidden").with_code(403))),
        };
        let next = on_error(&wallet, &error, at(10));
        assert_eq!(ready(&next.conditions).1, "Forbidden");
        assert!(ready(&next.conditions).2.starts_with("folding the stale meters"), "says what the operator was doing");
        assert!(conditions::is_true(&next.conditions, FUNDED));
    }

    #[test]
    fn an_organization_error_is_not_a_finalizer_error() {
        let org = Organization::new("acme", OrganizationSpec::default());
        let error = Error::Kube {
            action: "adding the finalizer cmp.gsv.dev/cleanup to Organization/acme".into(),
            source: kube::Error::Api(Box::new(kube::core::Status::failure("conflict", "Conflict").with_code(409))),
        };
        assert_eq!(ready(&on_error(&org, &error, at(10)).conditions).1, "Conflict");
    }
}
