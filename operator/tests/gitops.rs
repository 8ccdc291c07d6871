//! Dedicated runtimes through GitOps, end to end: the operator commits to a
//! real bare repository, a real Argo CD (repo server + application
//! controller, built from Go modules) syncs the Project's tree into its
//! runtime namespace, a version change is one new commit, deletion prunes,
//! the AppProject refuses anything outside the runtime namespace, and
//! deleting the Project takes its tree, Application and AppProject away.

mod support;

use cmp_crds::conditions::{self, READY, SYNCED};
use cmp_crds::{Instance, Offering};
use cmp_testenv::argocd::ArgoCd;
use cmp_testenv::git::{AnotherWriter, BareRemote};
use cmp_testenv::test::{eventually, test_kubeconfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::{CONVERGE, RUN_LABEL, World};

fn condition(instance: &Instance, type_: &str) -> Option<(String, String, String)> {
    let c = conditions::find(&instance.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Stands in for the kubelet (there is none here): reports the Deployment's replica available, as the
/// deployment controller would once the kubelet ran its pod.
async fn kubelet_stand_in_makes_available(deployments: &Api<Deployment>, name: &str) {
    let deployment = deployments.get(name).await.expect("Deployment");
    let status = json!({"status": {
        "observedGeneration": deployment.metadata.generation, "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": 1, "availableReplicas": 1,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                        "message": "Deployment has minimum availability."}]}});
    deployments.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await.expect("status");
}

fn applications(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Asks Argo CD to look at the repository now (its repo server caches refs for minutes otherwise).
async fn refresh(apps: &Api<DynamicObject>, name: &str) {
    let patch = json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}});
    let _ = apps.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await;
}

/// Waits until Argo CD reports the Application synced at `commit`, its last sync operation done (refreshing it meanwhile).
async fn synced_at(apps: &Api<DynamicObject>, name: &str, commit: &str) -> Value {
    eventually(&format!("Argo CD synced {name} at {commit}"), CONVERGE, || async {
        refresh(apps, name).await;
        let app = apps.get_opt(name).await.ok()??;
        let status = &app.data["status"];
        // The last operation is done, or was about an older commit (an unchanged tree needs none).
        let operation = &status["operationState"];
        let done = operation["phase"] == "Succeeded" || operation["operation"]["sync"]["revision"] != commit;
        (status["sync"]["status"] == "Synced" && status["sync"]["revision"] == commit && done).then(|| status.clone())
    })
    .await
}

#[tokio::test]
async fn a_dedicated_instance_is_committed_synced_by_argo_cd_changed_in_one_commit_pruned_and_its_project_removed() {
    let w = World::new("gitops").await;
    let scratch = std::env::temp_dir().join(format!("{}-gitops", w.run));
    let remote = BareRemote::create(&scratch.join("tenants.git")).expect("bare remote");
    let url = remote.url();
    let argocd_ns = format!("{}-argocd", w.run);
    let argo =
        ArgoCd::start(&w.client, &test_kubeconfig(), &argocd_ns, &scratch.join("argocd")).await.expect("Argo CD");
    let clone = scratch.join("clone");
    let flags =
        ["--gitops-repo", &url, "--gitops-clone-dir", &clone.to_string_lossy(), "--argocd-namespace", &argocd_ns];
    let _operator = w.operator("a", &flags);

    let (artifact, sha256) = cmp_testenv::lfx::example_flow("echo.json").expect("flow");
    let offering = format!("{}-ded", w.run);
    // The Offering's runtime key: each Dedicated runtime gets its own, derived from it.
    let offering_key = format!("{}-offering-key-value", w.run);
    let key_secret = format!("{}-runtime-key", w.run);
    Api::<Secret>::namespaced(w.client.clone(), "default")
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta { name: Some(key_secret.clone()), ..Default::default() },
                string_data: Some([("key".to_string(), offering_key.clone())].into()),
                ..Default::default()
            },
        )
        .await
        .expect("the Offering's key Secret");
    let apply_offering = |versions: Value| {
        let body = json!({"apiVersion": Offering::api_version(&()), "kind": "Offering",
            "metadata": {"name": offering, "labels": {RUN_LABEL: w.run}},
            "spec": {"displayName": "Dedicated", "runtime": {"mode": "Dedicated", "image": "langflowai/langflow:1.5.0", "port": 7860,
                                                             "apiKeySecretRef": {"namespace": "default", "name": key_secret, "key": "key"}},
                     "versions": versions, "plans": [{"id": "basic", "creditsPerRun": 1}]}});
        let api = Api::<Offering>::all(w.client.clone());
        let name = offering.clone();
        async move {
            api.patch(&name, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(body)).await.expect("Offering")
        }
    };
    let version = |name: &str| json!({"name": name, "artifact": {"url": artifact, "sha256": sha256}, "flowId": "echo"});
    apply_offering(json!([version("1")])).await;
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "GitOps"})).await;
    w.org_ready(&org).await;
    w.apply_project(&org, "support", json!({"displayName": "Support"})).await;
    w.project_ready(&org, "support").await;
    let runtime_ns = format!("cmp-{org}-support");
    let instances = Api::<Instance>::namespaced(w.client.clone(), &format!("cmp-{org}"));
    let apply_instance = |version: &str| {
        let body = json!({"apiVersion": Instance::api_version(&()), "kind": "Instance", "metadata": {"name": "bot"},
            "spec": {"project": "support", "offering": offering, "version": version, "plan": "basic"}});
        let api = instances.clone();
        async move {
            api.patch("bot", &PatchParams::apply("cmp-tests").force(), &Patch::Apply(body)).await.expect("Instance")
        }
    };
    apply_instance("1").await;

    // Committed: Synced names the commit, and the remote holds the folder.
    let synced = eventually("the Instance Synced with a commit", CONVERGE, || async {
        let i = instances.get("bot").await.ok()?;
        let gitops = i.status.as_ref()?.gitops.clone()?;
        (condition(&i, SYNCED)?.0 == "True").then_some(gitops)
    })
    .await;
    assert_eq!(synced.path, format!("tenants/{org}/support/bot"));
    assert_eq!(synced.repo, url);
    let log = remote.log();
    assert_eq!(log.len(), 1, "one commit: {log:?}");
    assert_eq!(log[0].0, synced.commit);
    assert!(log[0].1.contains(&format!("cmp-{org}/bot generation 1")), "{}", log[0].1);

    // The runtime's own key: in a Secret of the runtime namespace, derived from the Offering's with the Instance's
    // uid (the gateway derives the same), read by the Deployment, and never in git.
    let uid = instances.get("bot").await.expect("bot").metadata.uid.expect("a uid");
    let runtime_secrets = Api::<Secret>::namespaced(w.client.clone(), &runtime_ns);
    let runtime_key = eventually("the runtime's key Secret", CONVERGE, || async {
        let secret = runtime_secrets.get_opt("bot-runtime-key").await.ok()??;
        let value = secret.data?.get("api-key")?.0.clone();
        String::from_utf8(value).ok()
    })
    .await;
    assert_eq!(runtime_key, cmp_crds::runtime_key::for_instance(&offering_key, &uid));
    let committed = remote.file(&format!("{}/deployment.yaml", synced.path)).expect("committed");
    assert!(committed.contains("LANGFLOW_API_KEY") && committed.contains("bot-runtime-key"), "{committed}");
    for secret in [&runtime_key, &offering_key] {
        let found = cmp_testenv::git::git(Some(remote.path()), &["grep", "-r", secret.as_str(), "HEAD"]);
        assert!(found.is_err() || found.as_deref() == Ok(""), "no key in git: {found:?}");
    }

    // Argo CD syncs that commit into the runtime namespace.
    let apps = applications(&w.client, &argocd_ns);
    let status = synced_at(&apps, &runtime_ns, &synced.commit).await;
    assert_eq!(status["operationState"]["syncResult"]["revision"], synced.commit, "{status}");
    let deployments = Api::<Deployment>::namespaced(w.client.clone(), &runtime_ns);
    let config_maps = Api::<ConfigMap>::namespaced(w.client.clone(), &runtime_ns);
    assert!(Api::<Service>::namespaced(w.client.clone(), &runtime_ns).get("bot").await.is_ok(), "Service synced");
    assert_eq!(config_maps.get("bot-flow").await.expect("ConfigMap synced").data.expect("data")["version"], "1");
    let deployment = deployments.get("bot").await.expect("Deployment synced");
    // Pod security is enforced on Pods, not Deployments (there is no deployment controller here to make
    // one): the real API server admits the Deployment's pod, dry-run, under `restricted` and the quota.
    let template = deployment.spec.expect("spec").template;
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("bot-admission-check".into()),
            labels: template.metadata.and_then(|m| m.labels),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    Api::<Pod>::namespaced(w.client.clone(), &runtime_ns)
        .create(&dry_run, &pod)
        .await
        .expect("the pod passes restricted and the quota");
    let mut privileged = pod.clone();
    if let Some(c) = privileged.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.security_context = None;
    }
    let refused = Api::<Pod>::namespaced(w.client.clone(), &runtime_ns).create(&dry_run, &privileged).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.message.contains("restricted")),
        "the namespace does enforce restricted: {refused:?}"
    );

    // Ready waits for the Deployment; the kubelet stand-in makes it available.
    let waiting = eventually("Ready waits for the Deployment", CONVERGE, || async {
        let i = instances.get("bot").await.ok()?;
        condition(&i, READY).filter(|c| c.1 == "DeploymentUnavailable")
    })
    .await;
    assert_eq!(waiting.0, "False");
    kubelet_stand_in_makes_available(&deployments, "bot").await;
    eventually("the Instance Ready", CONVERGE, || async {
        let i = instances.get("bot").await.ok()?;
        (condition(&i, READY)?.0 == "True").then_some(())
    })
    .await;

    // A version change: exactly one new commit, synced by Argo CD.
    apply_offering(json!([version("1"), version("2")])).await;
    apply_instance("2").await;
    let changed = eventually("the version change committed", CONVERGE, || async {
        let i = instances.get("bot").await.ok()?;
        let gitops = i.status.as_ref()?.gitops.clone()?;
        (gitops.commit != synced.commit && condition(&i, SYNCED)?.0 == "True").then_some(gitops)
    })
    .await;
    let log = remote.log();
    assert_eq!(log.len(), 2, "one new commit: {log:?}");
    assert!(log[0].1.contains(&format!("cmp-{org}/bot generation 2")), "{}", log[0].1);
    synced_at(&apps, &runtime_ns, &changed.commit).await;
    eventually("the ConfigMap at version 2", CONVERGE, || async {
        let cm = config_maps.get("bot-flow").await.ok()?;
        (cm.data?.get("version")? == "2").then_some(())
    })
    .await;

    // Something outside the runtime namespace is refused by the AppProject, and never created.
    let project_dir = format!("tenants/{org}/support");
    let intruder =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cmp-intruder\n  namespace: default\ndata: {a: b}\n";
    let listed = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- bot\n- intruder\n";
    let someone = AnotherWriter::clone(&remote, &scratch.join("someone")).expect("clone");
    let tampering = [
        (format!("{project_dir}/intruder/kustomization.yaml"), Some("resources: [cm.yaml]\n")),
        (format!("{project_dir}/intruder/cm.yaml"), Some(intruder)),
        (format!("{project_dir}/kustomization.yaml"), Some(listed)),
    ];
    let files: Vec<(&str, Option<&str>)> = tampering.iter().map(|(p, b)| (p.as_str(), *b)).collect();
    someone.commit(&files, "someone adds an object in another namespace").expect("their push");
    let refusal = eventually("the AppProject refuses the other namespace", CONVERGE, || async {
        refresh(&apps, &runtime_ns).await;
        let text = apps.get_opt(&runtime_ns).await.ok()??.data["status"].to_string();
        text.contains("not permitted").then_some(text)
    })
    .await;
    assert!(refusal.contains("default"), "{refusal}");
    let elsewhere = Api::<ConfigMap>::namespaced(w.client.clone(), "default");
    assert!(elsewhere.get_opt("cmp-intruder").await.expect("read").is_none(), "never created outside the namespace");
    let back = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- bot\n";
    let untampering = [
        (format!("{project_dir}/intruder/kustomization.yaml"), None),
        (format!("{project_dir}/intruder/cm.yaml"), None),
        (format!("{project_dir}/kustomization.yaml"), Some(back)),
    ];
    let files: Vec<(&str, Option<&str>)> = untampering.iter().map(|(p, b)| (p.as_str(), *b)).collect();
    let taken_back = someone.commit(&files, "someone takes it back").expect("their push");
    // The refused sync gives up after its bounded retries, and the Project syncs again.
    synced_at(&apps, &runtime_ns, &taken_back).await;

    // Deleting the Instance removes its folder in a commit, and Argo CD prunes its objects.
    instances.delete("bot", &DeleteParams::default()).await.expect("delete");
    eventually("the Instance gone", CONVERGE, || async {
        matches!(instances.get_opt("bot").await, Ok(None)).then_some(())
    })
    .await;
    let log = remote.log();
    assert!(log[0].1.contains("removed"), "{}", log[0].1);
    eventually("Argo CD pruned the runtime", CONVERGE, || async {
        refresh(&apps, &runtime_ns).await;
        let gone =
            deployments.get_opt("bot").await.ok()?.is_none() && config_maps.get_opt("bot-flow").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    assert!(
        runtime_secrets.get_opt("bot-runtime-key").await.expect("a read").is_none(),
        "the runtime's key went with the Instance"
    );
    let secrets = Api::<Secret>::namespaced(w.client.clone(), "default");
    secrets.delete(&key_secret, &DeleteParams::default()).await.expect("the Offering's key Secret deleted");

    // Deleting the Project removes its tree in a commit, and its Application and AppProject.
    w.projects(&org).delete("support", &DeleteParams::default()).await.expect("delete the Project");
    let app_projects = Api::<DynamicObject>::namespaced_with(
        w.client.clone(),
        &argocd_ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "AppProject")),
    );
    eventually("the Project's Application and AppProject deleted", CONVERGE, || async {
        let gone =
            apps.get_opt(&runtime_ns).await.ok()?.is_none() && app_projects.get_opt(&runtime_ns).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    eventually("the Project's tree removed from the remote", CONVERGE, || async {
        remote.file(&format!("{project_dir}/kustomization.yaml")).is_none().then_some(())
    })
    .await;
    drop(argo);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A Secret named as a Dedicated runtime's key, which the operator did not write (a tenant's, say): the
/// Instance's Ready names it and says what to do, the operator neither overwrites nor deletes it (not even
/// when the Instance goes), and once it is deleted the runtime's own key is written.
#[tokio::test]
async fn a_runtime_key_secret_the_operator_did_not_write_is_named_in_status_and_left_alone() {
    let w = World::new("squat").await;
    let scratch = std::env::temp_dir().join(format!("{}-squat", w.run));
    let remote = BareRemote::create(&scratch.join("tenants.git")).expect("bare remote");
    let clone = scratch.join("clone");
    let _operator = w.operator("a", &["--gitops-repo", &remote.url(), "--gitops-clone-dir", &clone.to_string_lossy()]);
    let (artifact, sha256) = cmp_testenv::lfx::example_flow("echo.json").expect("flow");
    let (offering, offering_secret) = (format!("{}-ded", w.run), format!("{}-offering-key", w.run));
    let offering_key = format!("{}-offering-key-value", w.run);
    let default_secrets = Api::<Secret>::namespaced(w.client.clone(), "default");
    let secret = |name: &str, data: (&str, &str)| Secret {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        string_data: Some([(data.0.to_string(), data.1.to_string())].into()),
        ..Default::default()
    };
    default_secrets
        .create(&PostParams::default(), &secret(&offering_secret, ("key", &offering_key)))
        .await
        .expect("the Offering's key Secret");
    let body = json!({"apiVersion": Offering::api_version(&()), "kind": "Offering",
        "metadata": {"name": offering, "labels": {RUN_LABEL: w.run}},
        "spec": {"displayName": "Dedicated", "runtime": {"mode": "Dedicated", "image": "langflowai/langflow:1.5.0", "port": 7860,
                                                         "apiKeySecretRef": {"namespace": "default", "name": offering_secret, "key": "key"}},
                 "versions": [{"name": "1", "artifact": {"url": artifact, "sha256": sha256}, "flowId": "echo"}],
                 "plans": [{"id": "basic", "creditsPerRun": 1}]}});
    let offerings = Api::<Offering>::all(w.client.clone());
    offerings.patch(&offering, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(body)).await.expect("Offering");
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Squatted"})).await;
    w.apply_project(&org, "support", json!({"displayName": "Support"})).await;
    w.project_ready(&org, "support").await;
    let runtime_secrets = Api::<Secret>::namespaced(w.client.clone(), &format!("cmp-{org}-support"));
    let instances = Api::<Instance>::namespaced(w.client.clone(), &format!("cmp-{org}"));
    for name in ["bot", "spare"] {
        let foreign = secret(&format!("{name}-runtime-key"), ("api-key", "someone-elses-key"));
        runtime_secrets.create(&PostParams::default(), &foreign).await.expect("a Secret the operator did not write");
        let body = json!({"apiVersion": Instance::api_version(&()), "kind": "Instance", "metadata": {"name": name},
            "spec": {"project": "support", "offering": offering, "version": "1", "plan": "basic"}});
        instances.patch(name, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(body)).await.expect("Instance");
    }
    let value_of = |name: &'static str| {
        let api = runtime_secrets.clone();
        async move {
            let secret = api.get_opt(&format!("{name}-runtime-key")).await.ok()??;
            let labels = secret.metadata.labels.unwrap_or_default();
            let value = secret.data?.get("api-key").map(|v| String::from_utf8_lossy(&v.0).into_owned())?;
            Some((value, labels.get(cmp_crds::names::API_KEY_LABEL).cloned()))
        }
    };
    for name in ["bot", "spare"] {
        let (_, _, message) = eventually(&format!("{name} names the foreign Secret"), CONVERGE, || async {
            let ready = condition(&instances.get(name).await.ok()?, READY)?;
            (ready.1 == cmp_crds::conditions::reasons::RUNTIME_KEY_SECRET_FOREIGN).then_some(ready)
        })
        .await;
        assert!(message.contains(&format!("{name}-runtime-key")) && message.contains("delete it"), "{message}");
        assert_eq!(value_of(name).await, Some(("someone-elses-key".to_string(), None)), "not overwritten");
    }

    // Deleted by its owner: the operator writes the runtime's own key there.
    runtime_secrets.delete("bot-runtime-key", &DeleteParams::default()).await.expect("deleted");
    let uid = instances.get("bot").await.expect("bot").metadata.uid.expect("a uid");
    let written = eventually("the runtime's own key written", CONVERGE, || value_of("bot")).await;
    let expected = cmp_crds::runtime_key::for_instance(&offering_key, &uid);
    assert_eq!(written, (expected, Some("runtime".to_string())));
    eventually("bot's Ready no longer names a foreign Secret", CONVERGE, || async {
        let ready = condition(&instances.get("bot").await.ok()?, READY)?;
        (ready.1 != cmp_crds::conditions::reasons::RUNTIME_KEY_SECRET_FOREIGN).then_some(())
    })
    .await;

    // An Instance that goes leaves a Secret it did not write where it was.
    instances.delete("spare", &DeleteParams::default()).await.expect("delete");
    eventually("spare gone", CONVERGE, || async { matches!(instances.get_opt("spare").await, Ok(None)).then_some(()) })
        .await;
    assert_eq!(value_of("spare").await, Some(("someone-elses-key".to_string(), None)), "left alone");
    instances.delete("bot", &DeleteParams::default()).await.expect("delete");
    eventually("bot gone", CONVERGE, || async { matches!(instances.get_opt("bot").await, Ok(None)).then_some(()) })
        .await;
    assert_eq!(value_of("bot").await, None, "the key the operator wrote went with its Instance");
    default_secrets.delete(&offering_secret, &DeleteParams::default()).await.expect("deleted");
    let _ = std::fs::remove_dir_all(&scratch);
}
