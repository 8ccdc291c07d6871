use super::*;
use serde_json::json;

const NOW: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).expect("a valid time")
}

fn at(secs: i64) -> String {
    Timestamp::from_second(secs).expect("a valid time").to_string()
}

/// An Instance `bot` of Organization `acme` with one issued key `main`, Ready.
fn instance(key: &apikey::GeneratedKey, spec_key: serde_json::Value) -> Instance {
    serde_json::from_value(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
        "metadata": {"name": "bot", "namespace": "cmp-acme", "uid": "u1"},
        "spec": {"project": "support", "offering": "echo", "version": "1", "plan": "free", "apiKeys": [spec_key]},
        "status": {
            "phase": "Ready", "endpoint": "http://127.0.0.1:7861", "flowId": "f-1", "version": "1",
            "apiKeys": [{"name": "main", "publicId": key.public_id, "hash": key.hash, "createdAt": at(NOW - 60),
                         "secret": {"store": "Secret", "name": "bot-key-main", "key": "apiKey"}}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "message": "",
                            "lastTransitionTime": at(NOW - 30)}]
        }
    }))
    .expect("a valid Instance")
}

fn organization(suspended: bool) -> Organization {
    serde_json::from_value(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Organization", "metadata": {"name": "acme"},
        "spec": {"displayName": "Acme", "owners": [{"kind": "User", "name": "ada"}], "suspended": suspended}
    }))
    .expect("a valid Organization")
}

fn offering() -> Offering {
    serde_json::from_value(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering", "metadata": {"name": "echo"},
        "spec": {"displayName": "Echo", "runtime": {"mode": "Shared", "api": "v2", "endpoint": "http://127.0.0.1:7861",
                 "apiKeySecretRef": {"namespace": "cmp-system", "name": "lfx", "key": "apiKey"}},
                 "versions": [{"name": "1", "flowId": "echo", "artifact": {"url": "file:///x", "sha256": "0".repeat(64)}}],
                 "plans": [{"id": "free", "creditsPerRun": 2, "requestsPerMinute": 60, "timeoutSeconds": 30}]}
    }))
    .expect("a valid Offering")
}

fn code(result: Result<impl std::fmt::Debug, Refusal>) -> Code {
    result.expect_err("refused").code
}

#[test]
fn the_key_comes_from_bearer_or_x_api_key() {
    let mut headers = HeaderMap::new();
    assert_eq!(code(presented_key(&headers)), Code::InvalidApiKey);
    headers.insert("x-api-key", "cmp_a_b".parse().expect("a header"));
    assert_eq!(presented_key(&headers), Ok("cmp_a_b".to_string()));
    headers.insert("authorization", "Bearer cmp_c_d".parse().expect("a header"));
    assert_eq!(presented_key(&headers), Ok("cmp_c_d".to_string()), "Authorization wins");
    headers.insert("authorization", "Basic abc".parse().expect("a header"));
    assert_eq!(code(presented_key(&headers)), Code::InvalidApiKey, "another scheme is refused, not ignored");
}

#[test]
fn an_issued_key_passes_and_a_forged_one_does_not() {
    let key = apikey::generate();
    let inst = instance(&key, json!({"name": "main"}));
    assert_eq!(check_key(&inst, &key.plaintext, now()), Ok("main"));
    let forged = format!("cmp_{}_{}", key.public_id, "x".repeat(apikey::SECRET_LEN));
    assert_eq!(code(check_key(&inst, &forged, now())), Code::InvalidApiKey);
    assert_eq!(code(check_key(&inst, "cmp_short", now())), Code::InvalidApiKey);
    let other = apikey::generate();
    assert_eq!(code(check_key(&inst, &other.plaintext, now())), Code::InvalidApiKey);
}

#[test]
fn revoked_removed_and_expired_keys_have_their_own_codes() {
    let key = apikey::generate();
    let revoked = instance(&key, json!({"name": "main", "revoked": true}));
    assert_eq!(code(check_key(&revoked, &key.plaintext, now())), Code::KeyRevoked);
    let removed = instance(&key, json!({"name": "other"}));
    assert_eq!(code(check_key(&removed, &key.plaintext, now())), Code::KeyRevoked);
    let expired = instance(&key, json!({"name": "main", "expiresAt": at(NOW)}));
    assert_eq!(code(check_key(&expired, &key.plaintext, now())), Code::KeyExpired);
    let later = instance(&key, json!({"name": "main", "expiresAt": at(NOW + 1)}));
    assert_eq!(check_key(&later, &key.plaintext, now()), Ok("main"));
}

#[test]
fn a_key_on_another_instances_path_is_wrong_tenant() {
    let key = apikey::generate();
    let inst = instance(&key, json!({"name": "main"}));
    let path = |org: &str, name: &str| PathTarget { organization: org.into(), instance: name.into() };
    assert_eq!(check_tenant(&inst, None), Ok(()));
    assert_eq!(check_tenant(&inst, Some(&path("acme", "bot"))), Ok(()));
    assert_eq!(code(check_tenant(&inst, Some(&path("acme", "other")))), Code::WrongTenant);
    assert_eq!(code(check_tenant(&inst, Some(&path("globex", "bot")))), Code::WrongTenant);
}

#[test]
fn the_target_comes_from_the_crs() {
    let key = apikey::generate();
    let inst = instance(&key, json!({"name": "main"}));
    let target = run_target(&inst, Some(&organization(false)), Some(&offering())).expect("runnable");
    assert_eq!((target.organization.as_str(), target.project.as_str()), ("acme", "support"));
    assert_eq!((target.flow_id.as_str(), target.endpoint.as_str()), ("f-1", "http://127.0.0.1:7861"));
    assert_eq!((target.plan.credits_per_run, target.api), (2, RuntimeApi::V2));
    assert_eq!(target.wallet, ("cmp-acme".to_string(), "acme".to_string()));
}

#[test]
fn suspensions_and_unready_runtimes_are_refused() {
    let key = apikey::generate();
    let inst = instance(&key, json!({"name": "main"}));
    assert_eq!(code(run_target(&inst, Some(&organization(true)), Some(&offering()))), Code::Suspended);
    let mut suspended = inst.clone();
    suspended.spec.suspended = true;
    assert_eq!(code(run_target(&suspended, Some(&organization(false)), Some(&offering()))), Code::Suspended);
    // The store's suspension (a cancelled or refunded order) holds whatever the buyer's own flag says.
    let mut withdrawn = inst.clone();
    withdrawn.metadata.annotations =
        Some([(cmp_crds::names::STORE_SUSPENSION_ANNOTATION.to_string(), "order #7 cancelled".to_string())].into());
    let refused = run_target(&withdrawn, Some(&organization(false)), Some(&offering()));
    assert!(
        matches!(&refused, Err(r) if r.code == Code::Suspended && r.message.contains("order #7 cancelled")),
        "{refused:?}"
    );
    let mut unready = inst.clone();
    if let Some(status) = unready.status.as_mut() {
        status.conditions[0].status = "False".into();
    }
    assert_eq!(code(run_target(&unready, Some(&organization(false)), Some(&offering()))), Code::RuntimeNotReady);
    assert_eq!(code(run_target(&inst, Some(&organization(false)), None)), Code::RuntimeNotReady);
    assert_eq!(code(run_target(&inst, None, Some(&offering()))), Code::RuntimeNotReady);
}
