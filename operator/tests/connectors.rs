//! Connector secrets readable by the gateway alone, against a real
//! `bao server -dev` whose Kubernetes auth method checks every login with the
//! local API server (TokenReview): the gateway's ServiceAccount logs in to
//! its role and reads every tenant's connector secrets and nothing else; no
//! runtime ServiceAccount can log in at all, and the runtime policy and role
//! an earlier release wrote are deleted; the committed runtime carries no
//! trace of its bindings; a binding outside its Project is refused before
//! anything is committed; each binding's secret is reported found or missing.

mod support;

use cmp_crds::conditions::{self, CONNECTORS_READY, READY, SYNCED};
use cmp_crds::instance::ConnectorSecret;
use cmp_crds::instance::InstancePhase;
use cmp_crds::names::{connector_role, runtime_namespace};
use cmp_crds::{Instance, Offering};
use cmp_testenv::git::BareRemote;
use cmp_testenv::openbao::OpenBao;
use cmp_testenv::test::{eventually, gateway_service_account, service_account_token, test_kubeconfig};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::{CONVERGE, RUN_LABEL, World};

fn condition(instance: &Instance, type_: &str) -> Option<(String, String, String)> {
    let c = conditions::find(&instance.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Logs in to `role` with the token of the runtime ServiceAccount of `namespace`: the client token, or bao's refusal.
async fn login(bao: &OpenBao, client: &kube::Client, namespace: &str, role: &str) -> Result<String, String> {
    login_as(bao, client, namespace, "cmp-runtime", role).await
}

/// Logs in to `role` with the token of ServiceAccount `namespace/account`.
async fn login_as(
    bao: &OpenBao,
    client: &kube::Client,
    namespace: &str,
    account: &str,
    role: &str,
) -> Result<String, String> {
    let jwt = service_account_token(client, namespace, account, None).await.map_err(|e| e.to_string())?;
    let out = bao
        .run(&["write", "-format=json", "auth/kubernetes/login", &format!("role={role}"), &format!("jwt={jwt}")])
        .map_err(|e| e.to_string())?;
    let json: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    json["auth"]["client_token"].as_str().map(str::to_string).ok_or_else(|| out.clone())
}

#[tokio::test]
async fn only_the_gateway_reads_connector_secrets_and_runtimes_carry_no_trace_of_them() {
    let w = World::new("connectors").await;
    let scratch = std::env::temp_dir().join(format!("{}-connectors", w.run));
    let bao = OpenBao::start(&scratch.join("bao"), "cmp-test-root").await.expect("OpenBao starts");
    let remote = BareRemote::create(&scratch.join("tenants.git")).expect("bare remote");
    let clone = scratch.join("clone").to_string_lossy().into_owned();
    let url = remote.url();
    // The gateway's ServiceAccount, in a namespace of its own.
    let (gateway_ns, gateway_account) =
        gateway_service_account(&w.client, "connectors-gateway").await.expect("the gateway's ServiceAccount");
    let flags = [
        "--vault-addr",
        bao.addr(),
        "--vault-token",
        bao.token(),
        "--vault-gateway-service-account",
        &gateway_account,
        "--gitops-repo",
        &url,
        "--gitops-clone-dir",
        &clone,
        "--connector-allowed-hosts",
        "desk.example.com",
    ];
    let _operator = w.operator("a", &flags);

    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Connectors"})).await;
    w.org_ready(&org).await;

    // Without the Kubernetes auth method, the Project says what is missing, and recovers once it is there.
    w.apply_project(&org, "alpha", json!({"displayName": "alpha"})).await;
    let message = eventually("alpha reports the missing auth method", CONVERGE, || async {
        let project = w.projects(&org).get("alpha").await.ok()?;
        let ready = conditions::find(&project.status?.conditions, READY)?.clone();
        (ready.reason == "VaultUnavailable").then_some(ready.message)
    })
    .await;
    assert!(message.contains("--vault-kubernetes-auth") && message.contains("auth/kubernetes/role"), "{message}");
    bao.enable_kubernetes_auth(&w.client, &test_kubeconfig()).await.expect("Kubernetes auth");
    for project in ["alpha", "beta"] {
        w.apply_project(&org, project, json!({"displayName": project})).await;
        w.project_ready(&org, project).await;
        let path = format!("connectors/{org}/{project}/crm");
        bao.run(&["kv", "put", "-mount=secret", &path, &format!("token={project}-credential")]).expect("secret");
    }
    let (alpha_ns, alpha_role) = (runtime_namespace(&org, "alpha"), connector_role(&org, "alpha"));

    // No runtime reads connector secrets: there is no role a runtime ServiceAccount can log in to.
    let refused = login(&bao, &w.client, &alpha_ns, &alpha_role).await.expect_err("no runtime role");
    assert!(refused.contains("invalid role name") || refused.contains("not authorized"), "{refused}");
    // What an earlier release granted alpha's runtime (its own policy and role) is deleted by a restarted operator.
    let legacy = format!("path \"secret/data/connectors/{org}/alpha/*\" {{ capabilities = [\"read\"] }}");
    std::fs::write(scratch.join("legacy.hcl"), &legacy).expect("a policy file");
    let legacy_file = scratch.join("legacy.hcl").display().to_string();
    bao.run(&["policy", "write", &alpha_role, &legacy_file]).expect("the legacy policy");
    bao.run(&[
        "write",
        &format!("auth/kubernetes/role/{alpha_role}"),
        "bound_service_account_names=cmp-runtime",
        &format!("bound_service_account_namespaces={alpha_ns}"),
        &format!("token_policies={alpha_role}"),
    ])
    .expect("the legacy role");
    let token = login(&bao, &w.client, &alpha_ns, &alpha_role).await.expect("the legacy role works, for now");
    assert!(bao.run_as(&token, &["kv", "get", "-mount=secret", &format!("connectors/{org}/alpha/crm")]).is_ok());
    drop(_operator);
    let _operator = w.operator("b", &flags);
    eventually("the legacy runtime role and policy deleted", CONVERGE, || async {
        let role = bao.run(&["read", &format!("auth/kubernetes/role/{alpha_role}")]);
        let policy = bao.run(&["policy", "read", &alpha_role]);
        (role.is_err() && policy.is_err()).then_some(())
    })
    .await;
    assert!(login(&bao, &w.client, &alpha_ns, &alpha_role).await.is_err(), "alpha's runtime can no longer log in");

    // The gateway, as its own identity, reads every tenant's connector secrets, and writes and reads nothing else.
    let role = cmp_crds::names::GATEWAY_CONNECTOR_ROLE;
    let token = login_as(&bao, &w.client, &gateway_ns.name, "cmp-gateway", role).await.expect("the gateway logs in");
    for project in ["alpha", "beta"] {
        let read = bao.run_as(&token, &["kv", "get", "-mount=secret", &format!("connectors/{org}/{project}/crm")]);
        assert!(read.expect("the gateway reads it").contains(&format!("{project}-credential")));
    }
    let write = bao.run_as(&token, &["kv", "put", "-mount=secret", &format!("connectors/{org}/alpha/crm"), "token=x"]);
    assert!(write.expect_err("the gateway writes nothing").to_string().contains("permission denied"));
    bao.run(&["kv", "put", "-mount=secret", "cmp/keys/elsewhere", "apiKey=k"]).expect("a secret outside connectors/");
    let elsewhere = bao.run_as(&token, &["kv", "get", "-mount=secret", "cmp/keys/elsewhere"]);
    assert!(elsewhere.expect_err("nothing outside connectors/").to_string().contains("permission denied"));
    // A runtime's ServiceAccount cannot log in as the gateway.
    let refused = login(&bao, &w.client, &alpha_ns, role).await.expect_err("the gateway's role refuses a runtime");
    assert!(refused.contains("not authorized"), "{refused}");

    // Instances: a binding to alpha's secret, one to a secret not written yet, one to beta's path.
    let (artifact, sha256) = cmp_testenv::lfx::example_flow("echo.json").expect("flow");
    let offering = format!("{}-ded", w.run);
    let body = json!({"apiVersion": Offering::api_version(&()), "kind": "Offering",
        "metadata": {"name": offering, "labels": {RUN_LABEL: w.run}},
        "spec": {"displayName": "Dedicated", "runtime": {"mode": "Dedicated", "image": "img", "port": 7860},
                 "versions": [{"name": "1", "artifact": {"url": artifact, "sha256": sha256}, "flowId": "echo"}],
                 "plans": [{"id": "basic", "creditsPerRun": 1}]}});
    Api::<Offering>::all(w.client.clone())
        .patch(&offering, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(body))
        .await
        .expect("Offering");
    let instances = Api::<Instance>::namespaced(w.client.clone(), &format!("cmp-{org}"));
    for (name, path) in [("bot", "alpha/crm"), ("waiting", "alpha/later"), ("thief", "beta/crm")] {
        let body = json!({"apiVersion": Instance::api_version(&()), "kind": "Instance", "metadata": {"name": name},
            "spec": {"project": "alpha", "offering": offering, "version": "1", "plan": "basic",
                     "connectors": [{"name": "crm", "type": "hubspot", "vaultPath": format!("connectors/{org}/{path}"),
                                     "url": "https://desk.example.com/mcp"}]}});
        instances.patch(name, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(body)).await.expect("Instance");
    }
    let connector = |i: &Instance| i.status.as_ref()?.connectors.first().cloned();

    // The bound secret is found, and the runtime is committed with no trace of its binding.
    let bot = eventually("bot committed with its secret found", CONVERGE, || async {
        let i = instances.get("bot").await.ok()?;
        (connector(&i)?.secret == ConnectorSecret::Found && condition(&i, SYNCED)?.0 == "True").then_some(i)
    })
    .await;
    let gitops = bot.status.as_ref().and_then(|s| s.gitops.clone()).expect("status.gitops");
    let deployment = remote.file(&format!("{}/deployment.yaml", gitops.path)).expect("committed");
    assert!(!deployment.contains("vault") && !deployment.contains("connectors/"), "{deployment}");
    assert!(deployment.contains("automountServiceAccountToken: false"), "{deployment}");
    let tree = cmp_testenv::git::git(Some(remote.path()), &["grep", "-r", "credential", "HEAD"]);
    assert!(tree.is_err() || tree.as_deref() == Ok(""), "no secret value in git: {tree:?}");

    // A binding outside the Project is refused, and nothing of that Instance is committed.
    let thief = eventually("thief refused", CONVERGE, || async {
        let i = instances.get("thief").await.ok()?;
        (condition(&i, READY)?.1 == "ConnectorOutsideTenant").then_some(i)
    })
    .await;
    let (_, synced_reason, message) = condition(&thief, SYNCED).expect("Synced");
    assert_eq!(synced_reason, "ConnectorOutsideTenant");
    assert!(
        message.contains(&format!("connectors/{org}/beta/crm"))
            && message.contains(&format!("connectors/{org}/alpha/"))
    );
    assert_eq!(thief.status.as_ref().map(|s| s.phase), Some(InstancePhase::Failed));
    assert_eq!(connector(&thief).map(|c| c.secret), Some(ConnectorSecret::OutsideTenant));
    assert!(remote.file(&format!("tenants/{org}/alpha/thief/deployment.yaml")).is_none(), "never committed");

    // A secret not written yet: Missing, naming the path; written, it is found.
    let later = format!("connectors/{org}/alpha/later");
    let waiting = eventually("waiting reports the missing secret", CONVERGE, || async {
        let i = instances.get("waiting").await.ok()?;
        (connector(&i)?.secret == ConnectorSecret::Missing).then_some(i)
    })
    .await;
    let (_, reason, message) = condition(&waiting, CONNECTORS_READY).expect("ConnectorsReady");
    assert_eq!(reason, "ConnectorSecretMissing");
    assert!(message.contains(&later), "{message}");
    bao.run(&["kv", "put", "-mount=secret", &later, "token=late"]).expect("secret");
    eventually("waiting finds its secret", CONVERGE, || async {
        let i = instances.get("waiting").await.ok()?;
        (connector(&i)?.secret == ConnectorSecret::Found
            && condition(&i, CONNECTORS_READY)?.1 != "ConnectorSecretMissing")
            .then_some(())
    })
    .await;

    // Deleting a Project leaves the gateway's access in place.
    w.projects(&org).delete("beta", &Default::default()).await.expect("delete beta");
    eventually("beta gone", CONVERGE, || async {
        w.projects(&org).get_opt("beta").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(bao.run(&["policy", "read", role]).is_ok(), "the gateway's policy stays");
    // The Instances go while this operator runs (their folders are removed from this test's repository only).
    w.delete_org(&org).await;
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(w.client.clone());
    let control = format!("cmp-{org}");
    eventually("the control namespace gone", CONVERGE, || async {
        matches!(namespaces.get_opt(&control).await, Ok(None)).then_some(())
    })
    .await;
}
