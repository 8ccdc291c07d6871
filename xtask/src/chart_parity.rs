//! What `up` runs of the chart besides its three binaries, so that the local
//! platform refuses and allows what an installed chart does:
//!
//! - each binary acts as the chart's ServiceAccount for it (release `cmp` in
//!   `cmp-system`), with the chart's RBAC and the admission policies that
//!   narrow it: the operator's meter guard and the gateway's status guard;
//! - the chart's store-suspension policy;
//! - the admission webhook, served over TLS by `cmp-webhook` on loopback and
//!   registered with the API server under the chart's name and failure
//!   policies (by URL: the chart registers its Service).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use cmp_testenv::chart_identity::{ChartIdentity, Component, DEFAULT_NAMESPACE, OPERATOR_RELEASE, apply_policies};
use cmp_webhook::admission_server::{WebhookEndpoint, configuration};
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingWebhookConfiguration};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use crate::MANAGER;

/// Where `cmp-webhook` serves admission reviews.
const ADMISSION_ADDR: &str = "127.0.0.1:8443";
/// The registration's name: the chart's (`<release>-webhook`).
const REGISTRATION: &str = "cmp-webhook";
/// The chart's cluster-wide policies that belong to no binary.
const POLICIES_OF_NO_BINARY: &str = "store-suspension";

/// The chart's identities for the three binaries: a kubeconfig each.
pub(crate) struct Identities {
    pub operator: PathBuf,
    pub gateway: PathBuf,
    pub webhook: PathBuf,
}

/// Applies, as `admin`, the chart's identity of each binary for the flags it
/// runs with (and `gateway_values`, the Secrets the gateway may read), and
/// the chart's policies that belong to no binary.
pub(crate) fn identities(
    admin: &Path,
    operator_args: &[String],
    gateway_args: &[String],
    gateway_values: &[String],
    webhook_args: &[String],
) -> anyhow::Result<Identities> {
    let identity = |component: Component, args: &[String], values: &[String]| {
        ChartIdentity::for_flags(admin, component, OPERATOR_RELEASE, args, values)
            .map(|identity| identity.kubeconfig)
            .with_context(|| format!("applying the chart's identity of the {}", component.name()))
    };
    let identities = Identities {
        operator: identity(Component::Operator, operator_args, &[])?,
        gateway: identity(Component::Gateway, gateway_args, gateway_values)?,
        webhook: identity(Component::Webhook, webhook_args, &[])?,
    };
    apply_policies(admin, POLICIES_OF_NO_BINARY).context("applying the chart's store-suspension policy")?;
    Ok(identities)
}

/// The admission webhook's serving certificate, and the CA the API server trusts it by.
pub(crate) struct Admission {
    certs: cmp_testenv::certs::CertFiles,
}

impl Admission {
    /// Fresh certificates in `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let certs = cmp_testenv::certs::generate(dir).context("the admission webhook's certificates")?;
        Ok(Self { certs })
    }

    /// The flags that make `cmp-webhook` serve admission reviews.
    pub fn webhook_flags(&self) -> Vec<String> {
        vec![
            "--admission-addr".into(),
            ADMISSION_ADDR.into(),
            "--admission-cert".into(),
            self.certs.serving_cert.display().to_string(),
            "--admission-key".into(),
            self.certs.serving_key.display().to_string(),
        ]
    }

    /// Registers the webhook with the API server (replacing an earlier `up`'s,
    /// whose CA is gone), then waits until the API server calls it: a dry-run
    /// Instance naming a missing Project is refused.
    pub async fn register(&self, client: &kube::Client) -> anyhow::Result<String> {
        let ca =
            std::fs::read(&self.certs.ca_cert).with_context(|| format!("reading {}", self.certs.ca_cert.display()))?;
        let url = format!("https://{ADMISSION_ADDR}/validate");
        let object = configuration(REGISTRATION, &WebhookEndpoint::Url(url), &ca, None);
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .patch(REGISTRATION, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object))
            .await
            .context("registering the admission webhook")?;
        self.refuses_a_missing_project(client).await
    }

    /// The refusal of a dry-run Instance in `cmp-system` naming a Project that does not exist.
    async fn refuses_a_missing_project(&self, client: &kube::Client) -> anyhow::Result<String> {
        let probe: cmp_crds::Instance = serde_json::from_value(serde_json::json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": "admission-probe", "namespace": DEFAULT_NAMESPACE},
            "spec": {"project": "no-such-project", "offering": "echo", "version": "1", "plan": "free"}}))
        .context("the probe Instance")?;
        let instances = Api::<cmp_crds::Instance>::namespaced(client.clone(), DEFAULT_NAMESPACE);
        let dry_run = PostParams { dry_run: true, ..Default::default() };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match instances.create(&dry_run, &probe).await {
                Err(kube::Error::Api(refusal)) if refusal.message.contains("spec.project") => {
                    return Ok(refusal.message);
                }
                outcome if tokio::time::Instant::now() > deadline => bail!(
                    "the API server did not call the admission webhook at https://{ADMISSION_ADDR}/validate within 30s (a dry-run Instance naming a missing Project got {:?}); see the cmp-webhook log",
                    outcome.map(|_| "accepted")
                ),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

/// The chart's admission policies (rendered as release `cmp` in `cmp-system`
/// with its default values), after checking that each is in force.
pub(crate) async fn policies_in_force(client: &kube::Client) -> anyhow::Result<Vec<String>> {
    let rendered = cmp_testenv::helm::template(OPERATOR_RELEASE, DEFAULT_NAMESPACE, &[])?;
    if !rendered.success {
        bail!("helm template of charts/cmp failed: {}", rendered.stderr.trim());
    }
    let chart: Vec<String> = cmp_testenv::chart_identity::documents(&rendered.stdout)?
        .iter()
        .filter(|object| object["kind"].as_str() == Some("ValidatingAdmissionPolicy"))
        .filter_map(|object| object["metadata"]["name"].as_str().map(String::from))
        .collect();
    let in_force: Vec<String> = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing the admission policies")?
        .items
        .into_iter()
        .filter_map(|policy| policy.metadata.name)
        .collect();
    let missing: Vec<&String> = chart.iter().filter(|name| !in_force.contains(name)).collect();
    if !missing.is_empty() {
        bail!(
            "the chart's admission policies {missing:?} are not in force; up applies them with each binary's identity"
        );
    }
    Ok(chart)
}
