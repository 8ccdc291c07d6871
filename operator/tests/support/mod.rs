//! Running the real operator binary against the test control plane.
//!
//! Each test starts its own operator, restricted with
//! `--organization-selector` to the Organizations the test labels with its
//! run id, and with its own Lease, so tests run in parallel without seeing
//! each other's objects.

#![allow(dead_code)]

use std::time::Duration;

use cmp_crds::{Organization, Project, Wallet};
use cmp_testenv::apply::install_crds;
use cmp_testenv::chart_identity::{Component, OPERATOR_RELEASE};
use cmp_testenv::process::TestProcess;
use cmp_testenv::test::{eventually, test_client, unique_name};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// The label a test puts on its Organizations.
pub const RUN_LABEL: &str = "cmp.gsv.dev/test-run";
/// How long a test waits for the operator to converge before failing.
pub const CONVERGE: Duration = Duration::from_secs(90);

/// One test's world: a client, a run id and the operators it started.
pub struct World {
    pub client: kube::Client,
    pub run: String,
}

impl World {
    pub async fn new(prefix: &str) -> Self {
        let client = test_client().await;
        install_crds(&client, &cmp_crds::all_crds(), "cmp-tests").await.expect("CRDs install");
        Self { client, run: unique_name(prefix) }
    }

    /// A unique Organization name for this test.
    pub fn org_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.run)
    }

    /// Starts an operator for this run. `extra` adds flags.
    pub fn operator(&self, identity: &str, extra: &[&str]) -> Operator {
        Operator::start(&self.run, identity, extra)
    }

    /// Applies an Organization labelled for this run.
    pub async fn apply_org(&self, name: &str, spec: Value) {
        let org = json!({
            "apiVersion": Organization::api_version(&()), "kind": "Organization",
            "metadata": {"name": name, "labels": {RUN_LABEL: self.run}},
            "spec": spec,
        });
        Api::<Organization>::all(self.client.clone())
            .patch(name, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(org))
            .await
            .unwrap_or_else(|e| panic!("applying Organization {name}: {e}"));
    }

    /// Applies a Project in the organization's control namespace, once the
    /// operator has created that namespace.
    pub async fn apply_project(&self, org: &str, name: &str, spec: Value) {
        let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone());
        let ns = format!("cmp-{org}");
        eventually(&format!("namespace {ns}"), CONVERGE, || async { namespaces.get_opt(&ns).await.ok()? }).await;
        let project = json!({
            "apiVersion": Project::api_version(&()), "kind": "Project",
            "metadata": {"name": name, "namespace": format!("cmp-{org}")},
            "spec": spec,
        });
        self.projects(org)
            .patch(name, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(project))
            .await
            .unwrap_or_else(|e| panic!("applying Project {name}: {e}"));
    }

    /// Deletes an Organization and waits until it is gone (its finalizer
    /// handled), so that the test leaves nothing stuck behind.
    pub async fn delete_org(&self, name: &str) {
        let api = Api::<Organization>::all(self.client.clone());
        match api.delete(name, &kube::api::DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => panic!("deleting Organization {name}: {e}"),
        }
        eventually(&format!("Organization {name} to be gone"), CONVERGE, || async {
            matches!(api.get_opt(name).await, Ok(None)).then_some(())
        })
        .await;
    }

    pub fn projects(&self, org: &str) -> Api<Project> {
        Api::namespaced(self.client.clone(), &format!("cmp-{org}"))
    }

    pub fn wallets(&self, org: &str) -> Api<Wallet> {
        Api::namespaced(self.client.clone(), &format!("cmp-{org}"))
    }

    /// Waits until the Organization reports `Ready=True` for its current generation.
    pub async fn org_ready(&self, name: &str) -> Organization {
        ready(&Api::all(self.client.clone()), name, |o: &Organization| o.status.as_ref().map(|s| &s.conditions)).await
    }

    /// Waits until the Project reports `Ready=True` for its current generation.
    pub async fn project_ready(&self, org: &str, name: &str) -> Project {
        ready(&self.projects(org), name, |p: &Project| p.status.as_ref().map(|s| &s.conditions)).await
    }
}

/// Waits until the object reports `Ready=True` for its current generation.
async fn ready<K>(api: &Api<K>, name: &str, conditions: impl Fn(&K) -> Option<&Vec<Condition>>) -> K
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(&format!("{} {name} Ready", K::kind(&())), CONVERGE, || async {
        let object = api.get_opt(name).await.ok().flatten()?;
        let ready = cmp_crds::conditions::find(conditions(&object)?, "Ready")?;
        (ready.status == cmp_crds::conditions::TRUE && ready.observed_generation == object.meta().generation)
            .then_some(object)
    })
    .await
}

/// A running `cmp-operator` process, killed when dropped. Its health port,
/// log, metrics and signals are those of every test process.
pub struct Operator {
    process: TestProcess,
}

impl std::ops::Deref for Operator {
    type Target = TestProcess;
    fn deref(&self) -> &TestProcess {
        &self.process
    }
}

impl std::ops::DerefMut for Operator {
    fn deref_mut(&mut self) -> &mut TestProcess {
        &mut self.process
    }
}

impl Operator {
    fn start(run: &str, identity: &str, extra: &[&str]) -> Self {
        let mut args: Vec<String> = [
            "--organization-selector",
            &format!("{RUN_LABEL}={run}"),
            "--offering-selector",
            &format!("{RUN_LABEL}={run}"),
            "--lease-name",
            &format!("cmp-operator-{run}"),
            "--identity",
            identity,
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_cmp-operator"));
        let log = format!("{run}-{identity}");
        let process = TestProcess::spawn_as(
            Component::Operator,
            OPERATOR_RELEASE,
            &[],
            binary,
            &log,
            "info,cmp_operator=debug",
            &args,
        )
        .expect("cmp-operator starts as the chart's operator");
        Self { process }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.process.terminate().expect("operator exits")
    }

    /// Waits until it has reconciled at least one object of `kind` (for example after a restart).
    pub async fn reconciled(&self, kind: &str) {
        let series = format!("cmp_operator_reconciles_total{{kind=\"{kind}\"}}");
        eventually(&format!("the operator reconciled a {kind}"), CONVERGE, || async {
            let metrics = self.metrics().await?;
            metrics.lines().any(|l| l.starts_with(&series) && !l.ends_with(" 0")).then_some(())
        })
        .await;
    }

    /// The API writes it made so far (sum of `cmp_operator_api_writes_total`).
    pub async fn writes(&self) -> u64 {
        self.writes_where(|_| true).await
    }

    /// Writes to kinds other than the admission policy (which every operator applies at start).
    pub async fn tenant_writes(&self) -> u64 {
        self.writes_where(|series| !series.contains("ValidatingAdmissionPolicy")).await
    }

    /// Applies of child objects (not statuses, not the admission policy): what drift repair and idempotence are about.
    pub async fn child_writes(&self) -> u64 {
        self.writes_where(|series| series.contains("verb=\"apply\"") && !series.contains("ValidatingAdmissionPolicy"))
            .await
    }

    async fn writes_where(&self, keep: impl Fn(&str) -> bool) -> u64 {
        let metrics = self.metrics().await.unwrap_or_default();
        metrics
            .lines()
            .filter(|l| l.starts_with("cmp_operator_api_writes_total{") && keep(l))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// Sets `cmp.gsv.dev/reconcile-requested-at` on an object and waits until
/// its status says the request was handled.
pub async fn request_reconcile<K>(api: &Api<K>, name: &str, value: &str, handled: impl Fn(&K) -> Option<String>)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"annotations": {"cmp.gsv.dev/reconcile-requested-at": value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    eventually(&format!("reconcile request {value} of {name} handled"), CONVERGE, || async {
        let object = api.get(name).await.ok()?;
        (handled(&object).as_deref() == Some(value)).then_some(())
    })
    .await;
}
