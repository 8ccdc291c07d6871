//! The real gateway, the real operator and a runtime (a real lfx, or the
//! `LangflowStandIn` where lfx cannot play the part) against the test
//! control plane.
//!
//! Each test labels its Organizations and Offerings with its run id and
//! starts an operator restricted to them, so tests run in parallel.

#![allow(dead_code)]

pub mod tools;

use std::path::PathBuf;
use std::time::Duration;

use cmp_crds::{Instance, Offering, Organization, Project, Wallet};
use cmp_testenv::apply::install_crds;
use cmp_testenv::chart_identity::Component;
use cmp_testenv::free_port;
use cmp_testenv::langflow_stand_in::LangflowStandIn;
use cmp_testenv::process::TestProcess;
use cmp_testenv::test::{eventually, test_client, unique_name};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The label a test puts on its Organizations and Offerings.
pub const RUN_LABEL: &str = "cmp.gsv.dev/test-run";
/// How long a test waits for something to converge before failing.
pub const CONVERGE: Duration = Duration::from_secs(90);
/// The runtime's own API key.
pub const RUNTIME_KEY: &str = "runtime-test-key";

/// One test's world.
pub struct World {
    pub client: kube::Client,
    pub run: String,
    pub http: reqwest::Client,
}

/// A running gateway.
pub struct Gateway {
    pub process: TestProcess,
    pub base: String,
    pub usage: PathBuf,
}

impl Gateway {
    /// POSTs `body` to `path` with the API key `key` in `x-api-key`.
    pub async fn post(&self, http: &reqwest::Client, path: &str, key: &str, body: &Value) -> reqwest::Response {
        http.post(format!("{}{path}", self.base))
            .header("x-api-key", key)
            .json(body)
            .send()
            .await
            .expect("the gateway answers")
    }

    /// The usage events written so far.
    pub fn usage_events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.usage)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is a JSON event"))
            .collect()
    }
}

/// The code of an error answer, with its status.
pub async fn refusal(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    (status, body["error"]["code"].as_str().unwrap_or("<no error code>").to_string())
}

impl World {
    pub async fn new(prefix: &str) -> Self {
        let client = test_client().await;
        install_crds(&client, &cmp_crds::all_crds(), "cmp-tests").await.expect("CRDs install");
        Self { client, run: unique_name(prefix), http: reqwest::Client::new() }
    }

    /// Starts an operator for the run.
    pub fn operator(&self) -> TestProcess {
        cmp_testenv::process::operator_for_run(RUN_LABEL, &self.run).expect("cmp-operator starts")
    }

    /// Starts an operator for the run with `extra` flags.
    pub fn operator_with(&self, extra: &[&str]) -> TestProcess {
        cmp_testenv::process::operator_for_run_with(RUN_LABEL, &self.run, extra).expect("cmp-operator starts")
    }

    /// Starts a gateway named `replica`; `extra` adds flags.
    pub async fn gateway(&self, replica: &str, extra: &[&str]) -> Gateway {
        let port = free_port().expect("a free port");
        let usage = std::env::temp_dir().join(format!("{}-{replica}-usage.jsonl", self.run));
        let _ = std::fs::remove_file(&usage);
        let mut args: Vec<String> = vec![
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--replica-name".into(),
            replica.into(),
            "--usage-file".into(),
            usage.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_cmp-gateway"));
        let log = format!("{}-{replica}", self.run);
        let values = self.runtime_key_values();
        let process = TestProcess::spawn_as(
            Component::Gateway,
            &self.run,
            &values,
            binary,
            &log,
            "info,cmp_gateway=debug",
            &args,
        )
        .expect("cmp-gateway starts as the chart's gateway");
        process.ready(CONVERGE).await;
        Gateway { process, base: format!("http://127.0.0.1:{port}"), usage }
    }

    /// The chart values that let the gateway read the run's runtime key, and no other Secret.
    pub fn runtime_key_values(&self) -> Vec<String> {
        vec![
            "gateway.runtimeKeySecrets[0].namespace=default".into(),
            format!("gateway.runtimeKeySecrets[0].name={}", self.runtime_key_name()),
        ]
    }

    fn runtime_key_name(&self) -> String {
        format!("{}-runtime", self.run)
    }

    /// The Secret holding the runtime's key (in `default`), as an `apiKeySecretRef`.
    pub async fn runtime_key_secret(&self) -> Value {
        self.runtime_key_secret_holding(RUNTIME_KEY).await
    }

    /// Like [`World::runtime_key_secret`], holding `runtime_key` (a runtime that makes its own keys).
    pub async fn runtime_key_secret_holding(&self, runtime_key: &str) -> Value {
        let name = self.runtime_key_name();
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                            "stringData": {"apiKey": runtime_key}});
        Api::<Secret>::namespaced(self.client.clone(), "default")
            .patch(&name, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(secret))
            .await
            .expect("the runtime key Secret");
        json!({"namespace": "default", "name": name, "key": "apiKey"})
    }

    /// Applies a Shared Offering `name` on the runtime at `endpoint` (API `api`) with `plans`.
    pub async fn offering(&self, name: &str, api: &str, endpoint: &str, plans: Value) {
        self.offering_with(name, api, endpoint, plans, json!({})).await;
    }

    /// Like [`World::offering`], with more `spec` fields (for example `demo`).
    pub async fn offering_with(&self, name: &str, api: &str, endpoint: &str, plans: Value, more: Value) {
        self.offering_on(name, api, (endpoint, RUNTIME_KEY), plans, more).await;
    }

    /// Like [`World::offering_with`], on a runtime `(endpoint, key)` whose API key is `key`.
    pub async fn offering_on(&self, name: &str, api: &str, runtime: (&str, &str), plans: Value, more: Value) {
        let (endpoint, runtime_key) = runtime;
        let key = self.runtime_key_secret_holding(runtime_key).await;
        let (url, sha256) = cmp_testenv::lfx::example_flow("echo.json").expect("the example flow");
        let mut offering = json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering",
            "metadata": {"name": name, "labels": {RUN_LABEL: self.run}},
            "spec": {"displayName": name,
                     "runtime": {"mode": "Shared", "api": api, "endpoint": endpoint, "apiKeySecretRef": key},
                     "versions": [{"name": "1", "flowId": "echo", "artifact": {"url": url, "sha256": sha256}}],
                     "plans": plans},
        });
        for (field, value) in more.as_object().into_iter().flatten() {
            offering["spec"][field] = value.clone();
        }
        Api::<Offering>::all(self.client.clone())
            .patch(name, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(offering))
            .await
            .expect("the Offering applies");
    }

    /// Applies Organization `name` with `starter` credits and Project `support`; waits for the Wallet.
    pub async fn organization(&self, name: &str, starter: i64) {
        let org = json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Organization",
            "metadata": {"name": name, "labels": {RUN_LABEL: self.run}},
            "spec": {"displayName": name, "owners": [{"name": "ada"}], "starterCredits": starter},
        });
        Api::<Organization>::all(self.client.clone())
            .patch(name, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(org))
            .await
            .expect("the Organization applies");
        let wallets = self.wallets(name);
        eventually(&format!("the Wallet of {name} with {starter} credits"), CONVERGE, || async {
            let wallet = wallets.get_opt(name).await.ok().flatten()?;
            (wallet.status?.balance == starter).then_some(())
        })
        .await;
        let project = json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Project",
            "metadata": {"name": "support", "namespace": format!("cmp-{name}")}, "spec": {"displayName": "Support"},
        });
        Api::<Project>::namespaced(self.client.clone(), &format!("cmp-{name}"))
            .patch("support", &PatchParams::apply("cmp-tests").force(), &Patch::Apply(project))
            .await
            .expect("the Project applies");
    }

    /// Waits until the Wallet of `org` shows `balance`: every charge recorded, and nothing more.
    pub async fn wallet_at(&self, org: &str, balance: i64) {
        let wallets = self.wallets(org);
        eventually(&format!("the Wallet of {org} at {balance}"), CONVERGE, || async {
            let wallet = wallets.get(org).await.ok()?;
            (wallet.status?.balance == balance).then_some(())
        })
        .await;
    }

    pub fn wallets(&self, org: &str) -> Api<Wallet> {
        Api::namespaced(self.client.clone(), &format!("cmp-{org}"))
    }

    pub fn instances(&self, org: &str) -> Api<Instance> {
        Api::namespaced(self.client.clone(), &format!("cmp-{org}"))
    }

    /// Applies Instance `name` of `offering` on `plan` with API keys `keys`
    /// (`spec.apiKeys`), waits until it is Ready with every key issued, and
    /// returns the keys' plaintexts by name.
    pub async fn instance(
        &self,
        org: &str,
        name: &str,
        offering: &str,
        plan: &str,
        keys: Value,
    ) -> Vec<(String, String)> {
        self.instance_with(org, name, offering, plan, keys, true, json!({})).await
    }

    /// Two Organizations, `<run>-a` and `<run>-b`, each with `starter` credits and an Instance `bot` of
    /// `offering` on `plan` with one key: `[(organization, key plaintext); 2]`.
    pub async fn two_tenants(&self, offering: &str, plan: &str, starter: i64) -> [(String, String); 2] {
        [self.tenant("a", offering, plan, starter).await, self.tenant("b", offering, plan, starter).await]
    }

    async fn tenant(&self, suffix: &str, offering: &str, plan: &str, starter: i64) -> (String, String) {
        let org = format!("{}-{suffix}", self.run);
        self.organization(&org, starter).await;
        let key = self.instance(&org, "bot", offering, plan, json!([{"name": "main"}])).await.remove(0).1;
        (org, key)
    }

    /// Like [`World::instance`], with more `spec` fields (for example `connectors`).
    pub async fn instance_more(
        &self,
        org: &str,
        name: &str,
        offering: &str,
        plan: &str,
        keys: Value,
        more: Value,
    ) -> Vec<(String, String)> {
        self.instance_with(org, name, offering, plan, keys, true, more).await
    }

    /// Like [`World::instance`], without waiting for the runtime to be Ready.
    pub async fn instance_unready(
        &self,
        org: &str,
        name: &str,
        offering: &str,
        plan: &str,
        keys: Value,
    ) -> Vec<(String, String)> {
        self.instance_with(org, name, offering, plan, keys, false, json!({})).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn instance_with(
        &self,
        org: &str,
        name: &str,
        offering: &str,
        plan: &str,
        keys: Value,
        wait_ready: bool,
        more: Value,
    ) -> Vec<(String, String)> {
        let mut instance = json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance", "metadata": {"name": name},
            "spec": {"project": "support", "offering": offering, "version": "1", "plan": plan, "apiKeys": keys},
        });
        for (field, value) in more.as_object().into_iter().flatten() {
            instance["spec"][field] = value.clone();
        }
        let api = self.instances(org);
        api.patch(name, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(instance))
            .await
            .expect("the Instance applies");
        let wanted = keys.as_array().map_or(0, Vec::len);
        let issued =
            eventually(&format!("Instance {name} with {wanted} keys (Ready: {wait_ready})"), CONVERGE, || async {
                let status = api.get_opt(name).await.ok().flatten()?.status?;
                let ready = cmp_crds::conditions::find(&status.conditions, cmp_crds::conditions::READY)
                    .is_some_and(|c| c.status == "True");
                ((ready || !wait_ready) && status.api_keys.len() == wanted).then_some(status.api_keys)
            })
            .await;
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &format!("cmp-{org}"));
        let mut plaintexts = Vec::new();
        for key in issued {
            let secret = secrets.get(&key.secret.name).await.expect("the key Secret");
            let data = secret.data.and_then(|mut d| d.remove(&key.secret.key)).expect("the key in its Secret");
            plaintexts.push((key.name, String::from_utf8(data.0).expect("a text key")));
        }
        plaintexts
    }

    /// Appends a Manual grant of `credits` to the Wallet of `org`.
    pub async fn grant(&self, org: &str, id: &str, credits: i64) {
        let wallets = self.wallets(org);
        let mut wallet = wallets.get(org).await.expect("the Wallet");
        wallet
            .spec
            .grants
            .push(serde_json::from_value(json!({"id": id, "credits": credits, "source": "Manual"})).expect("a grant"));
        wallets.replace(org, &PostParams::default(), &wallet).await.expect("the grant is appended");
    }

    /// Merge-patches the spec of Instance `name`.
    pub async fn patch_instance(&self, org: &str, name: &str, spec: Value) {
        self.instances(org)
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec})))
            .await
            .expect("the Instance is patched");
    }
}

/// A run on the `LangflowStandIn`: its operator, a `v1` Offering
/// `<run>-v1` with `plans`, Organization `<run>-a` with starter credits, and
/// its Instance `bot` (plan `basic`) with one key. When destructuring, bind
/// `runtime` and `operator` (`_runtime`, not `_`): dropping them stops them.
pub struct OnStandIn {
    pub w: World,
    pub runtime: LangflowStandIn,
    pub operator: TestProcess,
    pub offering: String,
    pub org: String,
    /// The plaintext of `bot`'s key.
    pub key: String,
}

impl OnStandIn {
    pub async fn start(prefix: &str, plans: Value, credits: i64) -> Self {
        let w = World::new(prefix).await;
        let runtime = LangflowStandIn::start(RUNTIME_KEY).await.expect("the stand-in starts");
        let operator = w.operator();
        let offering = format!("{}-v1", w.run);
        w.offering(&offering, "v1", runtime.url(), plans).await;
        let org = format!("{}-a", w.run);
        w.organization(&org, credits).await;
        let key = w.instance(&org, "bot", &offering, "basic", json!([{"name": "main"}])).await.remove(0).1;
        Self { w, runtime, operator, offering, org, key }
    }
}

/// Waits until `check` gives a value.
pub async fn converge<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually(what, CONVERGE, check).await
}
