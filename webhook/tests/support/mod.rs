//! The real webhook and the real operator against the test control plane,
//! with deliveries signed by PyJWT as Saleor signs them.
//!
//! Each test gets its own store (its own API URL, so its own buyers), its own
//! Offering with SKUs unique to the run, an operator restricted to the run's
//! Organizations and Offerings, and a webhook that labels the Organizations
//! it creates for that operator.

#![allow(dead_code)]

use std::time::Duration;

use cmp_crds::Offering;
use cmp_testenv::apply::install_crds;
use cmp_testenv::chart_identity::Component;
use cmp_testenv::free_port;
use cmp_testenv::process::TestProcess;
use cmp_testenv::saleor::SaleorStandIn;
use cmp_testenv::test::{eventually, test_client, unique_name};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// The label the run puts on its Offering and (through the webhook) on its Organizations.
pub const RUN_LABEL: &str = "cmp.gsv.dev/test-run";
/// How long a test waits for something to converge before failing.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// One test's world.
pub struct World {
    pub client: kube::Client,
    pub run: String,
    pub store: SaleorStandIn,
    pub http: reqwest::Client,
    /// The plan SKU of the run's Offering.
    pub plan_sku: String,
    pub offering: String,
}

impl World {
    /// Installs the CRDs, starts the store and applies the run's Offering
    /// (Shared, its flow a file, its runtime nowhere: Instances are created,
    /// not run).
    pub async fn new(prefix: &str) -> Self {
        let client = test_client().await;
        install_crds(&client, &cmp_crds::all_crds(), "cmp-tests").await.expect("CRDs install");
        let run = unique_name(prefix);
        let store = SaleorStandIn::start().await.expect("the PyJWT store starts");
        let plan_sku = format!("{}-PRO", run.to_uppercase());
        let offering = format!("{run}-agent");
        let (url, sha256) = cmp_testenv::lfx::example_flow("echo.json").expect("the example flow");
        let object = json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering",
            "metadata": {"name": offering, "labels": {RUN_LABEL: run}},
            "spec": {
                "displayName": "Test agent",
                "runtime": {"mode": "Shared", "endpoint": "http://127.0.0.1:9", "apiKeySecretRef": {"namespace": "default", "name": "none", "key": "k"}},
                "versions": [{"name": "1", "flowId": "echo", "artifact": {"url": url, "sha256": sha256}}],
                "plans": [{"id": "pro", "creditsPerRun": 1, "includedCredits": 5000, "saleorSku": plan_sku}],
            }
        });
        Api::<Offering>::all(client.clone())
            .patch(&offering, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(object))
            .await
            .expect("the Offering applies");
        Self { client, run, store, http: reqwest::Client::new(), plan_sku, offering }
    }

    /// Starts an operator for the run.
    pub fn operator(&self) -> TestProcess {
        cmp_testenv::process::operator_for_run(RUN_LABEL, &self.run).expect("cmp-operator starts")
    }

    /// Starts the webhook with its admission endpoint, on a certificate for
    /// 127.0.0.1 signed by a fresh CA; `extra` adds flags.
    pub async fn admission_webhook(&self, extra: &[&str]) -> Webhook {
        let dir = std::env::temp_dir().join(format!("{}-certs", self.run));
        std::fs::create_dir_all(&dir).expect("a certificate directory");
        let certs = cmp_testenv::certs::generate(&dir).expect("certificates");
        let port = free_port().expect("a free port");
        let (addr, cert, key) = (
            format!("127.0.0.1:{port}"),
            certs.serving_cert.display().to_string(),
            certs.serving_key.display().to_string(),
        );
        let mut args = vec!["--admission-addr", &addr, "--admission-cert", &cert, "--admission-key", &key];
        args.extend_from_slice(extra);
        let mut webhook = self.webhook(&args).await;
        webhook.admission = Some((format!("https://{addr}/validate"), std::fs::read(&certs.ca_cert).expect("the CA")));
        webhook
    }

    /// Starts the webhook for the run's store; `extra` adds flags.
    pub async fn webhook(&self, extra: &[&str]) -> Webhook {
        let port = free_port().expect("a free port");
        let packs = cmp_testenv::control_plane::workspace_root().join("examples/saleor/credit-packs.yaml");
        let mut args: Vec<String> = vec![
            "--saleor-addr".into(),
            format!("127.0.0.1:{port}"),
            "--saleor-api-url".into(),
            self.store.api_url().into(),
            "--credit-packs".into(),
            packs.display().to_string(),
            "--organization-label".into(),
            format!("{RUN_LABEL}={}", self.run),
            "--jwks-min-refetch-seconds".into(),
            "1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_cmp-webhook"));
        let log = format!("{}-webhook", self.run);
        let process = TestProcess::spawn_as(Component::Webhook, &self.run, &[], binary, &log, "info", &args)
            .expect("cmp-webhook starts as the chart's webhook");
        process.ready(CONVERGE).await;
        Webhook { process, base: format!("http://127.0.0.1:{port}"), admission: None }
    }

    /// A recorded payload of `examples/saleor/`, its plan SKU replaced by the run's.
    pub fn fixture(&self, name: &str) -> Vec<u8> {
        let path = cmp_testenv::control_plane::workspace_root().join("examples/saleor").join(name);
        let text = std::fs::read_to_string(path).expect("the fixture exists");
        text.replace("SUPPORT-ASSISTANT-PRO", &self.plan_sku).replace("ECHO-FREE", &self.plan_sku).into_bytes()
    }

    /// The order of fixture `name` as the body of a `typename` event (for
    /// example "OrderFullyPaid") with the order's `status` and `chargeStatus`;
    /// `edit` changes the order further.
    pub fn body(
        &self,
        name: &str,
        typename: &str,
        status: &str,
        charge: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Vec<u8> {
        let mut body: Value = serde_json::from_slice(&self.fixture(name)).expect("the fixture is JSON");
        let mut order = body["order"].take();
        order["status"] = json!(status);
        order["chargeStatus"] = json!(charge);
        edit(&mut order);
        serde_json::to_vec(&json!({"__typename": typename, "order": order})).expect("JSON")
    }

    /// Delivers `body` as `event` (for example "order_fully_paid"), signed by the store.
    pub async fn deliver(&self, webhook: &Webhook, route: &str, event: &str, body: &[u8]) -> (u16, Value) {
        self.store.deliver(&self.http, &webhook.url(route), event, body).await.expect("the delivery is answered")
    }

    /// The run's Organizations.
    pub async fn organizations(&self) -> Vec<cmp_crds::Organization> {
        let orgs = Api::<cmp_crds::Organization>::all(self.client.clone());
        orgs.list(&kube::api::ListParams::default().labels(&format!("{RUN_LABEL}={}", self.run)))
            .await
            .expect("Organizations list")
            .items
    }
}

/// A running webhook.
pub struct Webhook {
    pub process: TestProcess,
    pub base: String,
    /// The admission URL and the CA that signed its certificate, when served.
    pub admission: Option<(String, Vec<u8>)>,
}

impl Webhook {
    /// The URL of a webhook route (`order-fully-paid`, ...).
    pub fn url(&self, route: &str) -> String {
        format!("{}/saleor/webhooks/{route}", self.base)
    }

    /// The admission endpoint's URL.
    pub fn admission_url(&self) -> String {
        self.admission.as_ref().map(|(url, _)| url.clone()).expect("started with admission_webhook")
    }

    /// The PEM CA bundle the API server trusts the endpoint with.
    pub fn ca_bundle(&self) -> Vec<u8> {
        self.admission.as_ref().map(|(_, ca)| ca.clone()).expect("started with admission_webhook")
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
