//! The catalog and Instances against the real control plane and a real lfx
//! runtime: Offerings verify their artifacts; an Instance on a Shared
//! Offering gets its own flow registered in the runtime, answers real runs,
//! rolls a version change out with no failed run, and takes its flow and
//! key Secrets away on delete. Every unresolved reference is a condition.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cmp_crds::{Instance, Offering};
use cmp_testenv::lfx::{Lfx, example_flow};
use cmp_testenv::test::eventually;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{CONVERGE, RUN_LABEL, World};

const RUNTIME_KEY: &str = "lfx-test-key";

/// Creates the Secret holding the runtime's API key, in `default`.
async fn runtime_key_secret(w: &World) -> String {
    let name = format!("{}-lfx", w.run);
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
        string_data: Some([("apiKey".to_string(), RUNTIME_KEY.to_string())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(w.client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .expect("Secret");
    name
}

fn version(name: &str, file: &str) -> Value {
    let (url, sha256) = example_flow(file).expect("example flow");
    json!({"name": name, "artifact": {"url": url, "sha256": sha256}, "flowId": "unused"})
}

async fn apply_offering(w: &World, name: &str, runtime: Value, versions: Vec<Value>) {
    let offering = json!({
        "apiVersion": Offering::api_version(&()), "kind": "Offering",
        "metadata": {"name": name, "labels": {RUN_LABEL: w.run}},
        "spec": {"displayName": name, "runtime": runtime, "versions": versions,
                 "plans": [{"id": "basic", "creditsPerRun": 1}, {"id": "pro", "creditsPerRun": 2}]},
    });
    Api::<Offering>::all(w.client.clone())
        .patch(name, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(offering))
        .await
        .unwrap_or_else(|e| panic!("applying Offering {name}: {e}"));
}

async fn apply_instance(w: &World, org: &str, name: &str, spec: Value) {
    let instance =
        json!({"apiVersion": Instance::api_version(&()), "kind": "Instance", "metadata": {"name": name}, "spec": spec});
    instances(w, org)
        .patch(name, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(instance))
        .await
        .unwrap_or_else(|e| panic!("applying Instance {name}: {e}"));
}

fn instances(w: &World, org: &str) -> Api<Instance> {
    Api::namespaced(w.client.clone(), &format!("cmp-{org}"))
}

/// The Instance once its `type_` condition has `reason` for its current generation.
async fn condition_reason(api: &Api<Instance>, name: &str, type_: &str, reason: &str) -> Instance {
    eventually(&format!("Instance {name} {type_} reason {reason}"), CONVERGE, || async {
        let i = api.get_opt(name).await.ok().flatten()?;
        let c = cmp_crds::conditions::find(&i.status.as_ref()?.conditions, type_)?;
        (c.reason == reason && c.observed_generation == i.meta().generation).then_some(i)
    })
    .await
}

/// Runs `flow_id` on the runtime; the answer's `result`, or an error.
async fn run(http: &reqwest::Client, lfx_url: &str, flow_id: &str, input: &str) -> Result<String, String> {
    let response = http
        .post(format!("{lfx_url}/flows/{flow_id}/run"))
        .header("x-api-key", RUNTIME_KEY)
        .json(&json!({"input_value": input}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    Ok(body["result"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn a_shared_instance_serves_its_own_flow_rolls_out_versions_without_a_gap_and_leaves_nothing_behind() {
    let w = World::new("catalog").await;
    let dir = std::env::temp_dir().join(format!("{}-lfx", w.run));
    let lfx = Lfx::start(&dir, RUNTIME_KEY).await.expect("lfx runtime starts");
    let mut operator = w.operator("a", &[]);
    let secret = runtime_key_secret(&w).await;
    let offering = format!("{}-echo", w.run);
    let runtime = json!({"mode": "Shared", "endpoint": lfx.url(), "port": 8000,
                         "apiKeySecretRef": {"namespace": "default", "name": secret, "key": "apiKey"}});
    apply_offering(&w, &offering, runtime, vec![version("1", "echo.json"), version("2", "greeting.json")]).await;
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Catalog"})).await;
    w.apply_project(&org, "main", json!({})).await;
    w.project_ready(&org, "main").await;
    apply_instance(
        &w,
        &org,
        "bot",
        json!({"project": "main", "offering": offering, "version": "1", "plan": "basic",
                                           "apiKeys": [{"name": "main"}]}),
    )
    .await;
    let api = instances(&w, &org);
    let ready = condition_reason(&api, "bot", "Ready", "RuntimeReady").await;
    let status = ready.status.clone().expect("status");
    let flow_id = status.flow_id.clone().expect("flowId");
    let uid = ready.metadata.uid.clone().expect("uid");
    assert_eq!(flow_id, cmp_crds::names::flow_id(&format!("cmp-{org}"), "bot", &uid), "derived from the Instance");
    assert_eq!((status.version.as_deref(), status.endpoint.as_deref()), (Some("1"), Some(lfx.url())));
    assert_eq!(status.phase, cmp_crds::instance::InstancePhase::Ready);

    // The runtime really serves the flow under the Instance's id.
    let http = reqwest::Client::new();
    assert_eq!(run(&http, lfx.url(), &flow_id, "hello there").await.as_deref(), Ok("hello there"));

    // The key: plaintext once in a Secret, only its hash in status.
    let key = &status.api_keys[0];
    let secrets = Api::<Secret>::namespaced(w.client.clone(), &format!("cmp-{org}"));
    let key_secret = secrets.get(&key.secret.name).await.expect("key Secret");
    let plaintext = key_secret.data.as_ref().and_then(|d| d.get("apiKey")).expect("plaintext").0.clone();
    let plaintext = String::from_utf8(plaintext).expect("utf-8");
    assert!(cmp_crds::apikey::verify(&plaintext, &key.hash), "the Secret holds the key whose hash status keeps");
    let status_json = serde_json::to_string(&status).expect("json");
    assert!(!status_json.contains(&plaintext), "status never holds the plaintext");

    // Issued once: a restarted operator keeps the key.
    operator.kill();
    let restarted = w.operator("b", &[]);
    restarted.reconciled("Instance").await;
    let after = api.get("bot").await.expect("Instance");
    assert_eq!(after.status.as_ref().map(|s| s.api_keys.clone()), Some(status.api_keys.clone()), "never re-issued");
    let same_secret = secrets.get(&key.secret.name).await.expect("key Secret");
    assert_eq!(same_secret.metadata.resource_version, key_secret.metadata.resource_version);

    // A version change with runs going on: not one fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let runs = {
        let (stop, ok, failed, http, url, flow) =
            (stop.clone(), ok.clone(), failed.clone(), http.clone(), lfx.url().to_string(), flow_id.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match run(&http, &url, &flow, "Ada").await {
                    Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        errors.push(e);
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
            errors
        })
    };
    let patch = json!({"spec": {"version": "2"}});
    api.patch("bot", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("version change");
    eventually("version 2 served", CONVERGE, || async {
        let i = api.get("bot").await.ok()?;
        (i.status?.version.as_deref() == Some("2")).then_some(())
    })
    .await;
    let answer = run(&http, lfx.url(), &flow_id, "Ada").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let errors = runs.await.expect("run loop");
    assert_eq!(answer.as_deref(), Ok("Hello, Ada! Welcome aboard."), "the new version answers");
    assert!(ok.load(Ordering::SeqCst) > 5, "runs went on during the change");
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no run failed during the change: {errors:?}");

    // Delete: the flow leaves the runtime, the plaintext leaves the cluster.
    api.delete("bot", &DeleteParams::default()).await.expect("delete");
    eventually("Instance gone", CONVERGE, || async { matches!(api.get_opt("bot").await, Ok(None)).then_some(()) })
        .await;
    let gone = http
        .get(format!("{}/flows/{flow_id}/info", lfx.url()))
        .header("x-api-key", RUNTIME_KEY)
        .send()
        .await
        .expect("lfx answers");
    assert_eq!(gone.status().as_u16(), 404, "the flow is gone from the runtime");
    assert!(secrets.get_opt(&key.secret.name).await.expect("read").is_none(), "the key Secret is gone");
    w.delete_org(&org).await;
}

#[tokio::test]
async fn every_unresolved_reference_quota_and_artifact_mismatch_is_a_condition_naming_the_field_and_a_freed_place_admits_the_next()
 {
    let w = World::new("refs").await;
    let _operator = w.operator("a", &[]);
    let dedicated = json!({"mode": "Dedicated", "image": "langflowai/langflow:1.5.0"});
    let good = format!("{}-good", w.run);
    let mut deprecated = version("old", "echo.json");
    deprecated["deprecated"] = json!(true);
    apply_offering(&w, &good, dedicated.clone(), vec![deprecated, version("1", "echo.json")]).await;
    let bad = format!("{}-bad", w.run);
    let mut mismatch = version("1", "echo.json");
    let pinned = "0".repeat(64);
    mismatch["artifact"]["sha256"] = json!(pinned);
    apply_offering(&w, &bad, dedicated, vec![mismatch]).await;

    let offerings = Api::<Offering>::all(w.client.clone());
    let bad_status = eventually("the mismatch reported", CONVERGE, || async {
        let o = offerings.get(&bad).await.ok()?;
        let c = cmp_crds::conditions::find(&o.status.as_ref()?.conditions, "ArtifactsVerified")?.clone();
        (c.reason == "ArtifactMismatch").then_some(c)
    })
    .await;
    let (_, actual) = example_flow("echo.json").expect("flow");
    assert!(bad_status.message.contains("version 1") && bad_status.message.contains(&pinned), "{}", bad_status.message);
    assert!(bad_status.message.contains(&actual), "names both hashes: {}", bad_status.message);
    eventually("the good Offering Ready", CONVERGE, || async {
        let o = offerings.get(&good).await.ok()?;
        cmp_crds::conditions::is_true(&o.status?.conditions, "Ready").then_some(())
    })
    .await;

    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Refs"})).await;
    w.apply_project(&org, "main", json!({"quota": {"maxInstances": 1}})).await;
    w.project_ready(&org, "main").await;
    let api = instances(&w, &org);
    let spec = |offering: &str, version: &str, plan: &str| json!({"project": "main", "offering": offering, "version": version, "plan": plan});
    apply_instance(&w, &org, "first", spec(&good, "1", "basic")).await;
    condition_reason(&api, "first", "Ready", "AwaitingGitOps").await;
    apply_instance(&w, &org, "second", spec(&good, "1", "basic")).await;
    let over = condition_reason(&api, "second", "Ready", "QuotaExceeded").await;
    assert_eq!(over.status.map(|s| s.phase), Some(cmp_crds::instance::InstancePhase::Failed));
    // The older Instance leaving admits the one ranked behind it, with nothing else changed.
    api.delete("first", &DeleteParams::default()).await.expect("delete");
    condition_reason(&api, "second", "Ready", "AwaitingGitOps").await;
    api.delete("second", &DeleteParams::default()).await.expect("delete");
    w.apply_project(&org, "main", json!({"quota": {"maxInstances": 10}})).await;

    let cases = [
        (
            "no-project",
            json!({"project": "nope", "offering": good, "version": "1", "plan": "basic"}),
            "ProjectNotFound",
            "spec.project is \"nope\"",
        ),
        ("no-offering", spec("nope", "1", "basic"), "OfferingNotFound", "spec.offering is \"nope\""),
        ("no-version", spec(&good, "9", "basic"), "VersionNotFound", "spec.version is \"9\""),
        ("no-plan", spec(&good, "1", "gold"), "PlanNotFound", "spec.plan is \"gold\""),
        ("deprecated", spec(&good, "old", "basic"), "VersionDeprecated", "spec.version is \"old\""),
        ("mismatch", spec(&bad, "1", "basic"), "ArtifactMismatch", "spec.version is \"1\""),
    ];
    for (name, spec, _, _) in &cases {
        apply_instance(&w, &org, name, spec.clone()).await;
    }
    for (name, _, reason, names) in &cases {
        let i = condition_reason(&api, name, "Ready", reason).await;
        let ready = cmp_crds::conditions::find(&i.status.as_ref().expect("status").conditions, "Ready").expect("Ready");
        assert!(ready.message.contains(names), "{name}: {}", ready.message);
    }
    w.delete_org(&org).await;
}

#[tokio::test]
async fn keys_rotate_revoke_report_a_deleted_secret_and_only_admins_and_developers_read_them() {
    let w = World::new("keys").await;
    let _operator = w.operator("a", &[]);
    let offering = format!("{}-ded", w.run);
    apply_offering(&w, &offering, json!({"mode": "Dedicated", "image": "img"}), vec![version("1", "echo.json")]).await;
    let org = w.org_name("org");
    w.apply_org(
        &org,
        json!({"displayName": "Keys", "members": [
        {"kind": "User", "name": format!("{}-dev", w.run), "role": "Developer"},
        {"kind": "User", "name": format!("{}-viewer", w.run), "role": "Viewer"}]}),
    )
    .await;
    w.org_ready(&org).await;
    let api = instances(&w, &org);
    let spec = |keys: Value| json!({"project": "main", "offering": offering, "version": "1", "plan": "basic", "apiKeys": keys});
    apply_instance(&w, &org, "bot", spec(json!([{"name": "k1"}]))).await;
    let one = condition_reason(&api, "bot", "KeysIssued", "KeysIssued").await;
    let k1 = one.status.expect("status").api_keys[0].clone();

    // Rotation: both keys are listed (so both work), the first unchanged.
    apply_instance(&w, &org, "bot", spec(json!([{"name": "k1"}, {"name": "k2"}]))).await;
    let two = eventually("two keys", CONVERGE, || async {
        let keys = api.get("bot").await.ok()?.status?.api_keys;
        (keys.len() == 2).then_some(keys)
    })
    .await;
    assert_eq!(two[0], k1, "the first key is untouched by the rotation");

    // Revocation drops the hash from status at once; removal deletes the plaintext.
    apply_instance(&w, &org, "bot", spec(json!([{"name": "k1", "revoked": true}, {"name": "k2"}]))).await;
    eventually("k1 revoked", CONVERGE, || async {
        let keys = api.get("bot").await.ok()?.status?.api_keys;
        (keys.len() == 1 && keys[0].name == "k2").then_some(())
    })
    .await;
    let secrets = Api::<Secret>::namespaced(w.client.clone(), &format!("cmp-{org}"));
    assert!(secrets.get_opt(&k1.secret.name).await.expect("read").is_some(), "a revoked key keeps its Secret");
    apply_instance(&w, &org, "bot", spec(json!([{"name": "k2"}]))).await;
    eventually("k1's plaintext deleted", CONVERGE, || async {
        secrets.get_opt(&k1.secret.name).await.ok()?.is_none().then_some(())
    })
    .await;

    // A developer reads the key Secret; a viewer cannot.
    let k2 = &two[1].secret.name;
    let developer = cmp_testenv::test::client_as(&format!("{}-dev", w.run), &[]).await;
    let viewer = cmp_testenv::test::client_as(&format!("{}-viewer", w.run), &[]).await;
    let ns = format!("cmp-{org}");
    eventually("the developer reads the key", CONVERGE, || async {
        Api::<Secret>::namespaced(developer.clone(), &ns).get(k2).await.ok()
    })
    .await;
    match Api::<Secret>::namespaced(viewer, &ns).get(k2).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("a viewer must not read key Secrets: {other:?}"),
    }

    // A plaintext deleted by hand is reported; the key keeps working and no other is minted.
    secrets.delete(k2, &DeleteParams::default()).await.expect("delete by hand");
    let reported = condition_reason(&api, "bot", "KeysIssued", "KeySecretMissing").await;
    assert_eq!(reported.status.expect("status").api_keys, vec![two[1].clone()], "the key stays as it was");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(secrets.get_opt(k2).await.expect("read").is_none(), "no new key was minted into its place");

    // Retain: the Instance goes, its key Secret stays.
    apply_instance(
        &w,
        &org,
        "kept",
        json!({"project": "main", "offering": offering, "version": "1", "plan": "basic",
                                            "apiKeys": [{"name": "k"}], "deletionPolicy": "Retain"}),
    )
    .await;
    let kept = condition_reason(&api, "kept", "KeysIssued", "KeysIssued").await;
    let kept_secret = kept.status.expect("status").api_keys[0].secret.name.clone();
    api.delete("kept", &DeleteParams::default()).await.expect("delete");
    eventually("Instance kept gone", CONVERGE, || async {
        matches!(api.get_opt("kept").await, Ok(None)).then_some(())
    })
    .await;
    assert!(secrets.get_opt(&kept_secret).await.expect("read").is_some(), "Retain leaves the key Secret");
    w.delete_org(&org).await;
}

#[tokio::test]
async fn an_instance_whose_runtime_is_down_stays_terminating_with_the_reason_until_cleanup_is_abandoned() {
    let w = World::new("down").await;
    let _operator = w.operator("a", &[]);
    let secret = runtime_key_secret(&w).await;
    let offering = format!("{}-down", w.run);
    let port = cmp_testenv::free_port().expect("port");
    let runtime = json!({"mode": "Shared", "endpoint": format!("http://127.0.0.1:{port}"),
                         "apiKeySecretRef": {"namespace": "default", "name": secret, "key": "apiKey"}});
    apply_offering(&w, &offering, runtime, vec![version("1", "echo.json")]).await;
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Down"})).await;
    w.apply_project(&org, "main", json!({})).await;
    w.project_ready(&org, "main").await;
    apply_instance(&w, &org, "bot", json!({"project": "main", "offering": offering, "version": "1", "plan": "basic"}))
        .await;
    let api = instances(&w, &org);
    let waiting = condition_reason(&api, "bot", "Synced", "RuntimeUnavailable").await;
    assert_eq!(waiting.status.map(|s| s.phase), Some(cmp_crds::instance::InstancePhase::Provisioning));

    api.delete("bot", &DeleteParams::default()).await.expect("delete");
    let stuck = eventually("the Instance Terminating with the runtime's error", CONVERGE, || async {
        let i = api.get_opt("bot").await.ok().flatten()?;
        let status = i.status?;
        let ready = cmp_crds::conditions::find(&status.conditions, "Ready")?;
        (status.phase == cmp_crds::instance::InstancePhase::Terminating && ready.reason == "RuntimeUnavailable")
            .then(|| ready.message.clone())
    })
    .await;
    assert!(stuck.contains("abandon-cleanup"), "the message names the way out: {stuck}");
    let patch = json!({"metadata": {"annotations": {"cmp.gsv.dev/abandon-cleanup": "true"}}});
    api.patch("bot", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    eventually("Instance gone", CONVERGE, || async { matches!(api.get_opt("bot").await, Ok(None)).then_some(()) })
        .await;
    w.delete_org(&org).await;
}

/// What an Offering counts: its Instances, per version and per plan (only the non-zero ones).
type OfferingCounts = (i64, Vec<(String, i64)>, Vec<(String, i64)>);

fn offering_counts(offering: &Offering) -> Option<OfferingCounts> {
    let status = offering.status.as_ref()?;
    let versions = status.versions.iter().filter(|v| v.instances > 0).map(|v| (v.name.clone(), v.instances));
    let plans = status.plans.iter().filter(|p| p.instances > 0).map(|p| (p.id.clone(), p.instances));
    Some((status.instance_count, versions.collect(), plans.collect()))
}

#[tokio::test]
async fn offerings_and_projects_count_a_burst_of_instances_once_it_settles_and_follow_changes_and_deletions() {
    let w = World::new("counts").await;
    let _operator = w.operator("a", &[]);
    let offering = format!("{}-counted", w.run);
    let dedicated = json!({"mode": "Dedicated", "image": "langflowai/langflow:1.5.0"});
    apply_offering(&w, &offering, dedicated, vec![version("1", "echo.json"), version("2", "echo.json")]).await;
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Counts"})).await;
    for project in ["main", "side"] {
        w.apply_project(&org, project, json!({"quota": {"maxInstances": 10}})).await;
        w.project_ready(&org, project).await;
    }
    let spec = |project: &str, version: &str, plan: &str| json!({"project": project, "offering": offering, "version": version, "plan": plan});
    // A burst, all at once: every Instance's change wakes the same Offering and the two Projects.
    let burst = [
        ("a", spec("main", "1", "basic")),
        ("b", spec("main", "1", "basic")),
        ("c", spec("main", "1", "basic")),
        ("d", spec("main", "2", "pro")),
        ("e", spec("side", "2", "basic")),
        ("f", spec("side", "2", "basic")),
    ];
    futures::future::join_all(burst.iter().map(|(name, spec)| apply_instance(&w, &org, name, spec.clone()))).await;

    let offerings = Api::<Offering>::all(w.client.clone());
    let counted = |want: OfferingCounts, project_counts: [(&'static str, i64); 2]| {
        let (offerings, projects) = (offerings.clone(), w.projects(&org));
        let offering = offering.clone();
        async move {
            eventually(&format!("the counts {want:?} and {project_counts:?}"), CONVERGE, || async {
                let got = offering_counts(&offerings.get(&offering).await.ok()?)?;
                for (project, count) in project_counts {
                    (projects.get(project).await.ok()?.status?.instance_count == count).then_some(())?;
                }
                (got == want).then_some(())
            })
            .await
        }
    };
    let owned = |pairs: &[(&str, i64)]| pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect::<Vec<_>>();
    counted((6, owned(&[("1", 3), ("2", 3)]), owned(&[("basic", 5), ("pro", 1)])), [("main", 4), ("side", 2)]).await;

    // A version change moves one Instance between versions; a deletion leaves every count it was in.
    apply_instance(&w, &org, "a", spec("main", "2", "basic")).await;
    instances(&w, &org).delete("e", &DeleteParams::default()).await.expect("delete");
    counted((5, owned(&[("1", 2), ("2", 3)]), owned(&[("basic", 4), ("pro", 1)])), [("main", 4), ("side", 1)]).await;
    w.delete_org(&org).await;
}
