//! The buyer's journey: the seed documents' acceptance cases (T1-T9), run
//! against a running platform (the operator, the gateway, the webhook, a
//! real lfx runtime and OpenBao) with orders signed as Saleor signs them.
//! `cargo xtask demo` runs it against what `cargo xtask up` starts;
//! `xtask/tests/journey.rs` against a platform of its own.
//!
//! The steps run in the order their state allows: the rate-limit burst (T3)
//! comes after the Wallet is exhausted and topped up (T5), because a burst
//! leaves the key without requests for a while, and the top-up is timed.

pub mod network;
mod orders;
mod steps;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use cmp_crds::{Instance, Offering};
use cmp_testenv::openbao::OpenBao;
use cmp_testenv::saleor::SaleorStandIn;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use tokio::time::Instant;

pub use orders::{Buyer, Order};

/// How long a step waits for the platform to converge before it fails.
const CONVERGE: Duration = Duration::from_secs(120);

/// A running platform, as the journey reaches it.
pub struct Platform<'a> {
    /// An administrator's client of the API server.
    pub client: kube::Client,
    /// The administrator's kubeconfig (the journey impersonates other users with it).
    pub kubeconfig: PathBuf,
    /// The gateway's base URL (`http://127.0.0.1:8000`).
    pub gateway: String,
    /// The webhook's base URL for Saleor deliveries.
    pub webhook: String,
    /// The store the orders come from (it signs them).
    pub store: &'a SaleorStandIn,
    /// The OpenBao the operator writes connector policies to.
    pub openbao: &'a OpenBao,
    /// Where the gateway writes its usage events (JSON lines).
    pub usage_file: PathBuf,
    /// The SKU of a plan with included credits, a price and a rate limit.
    pub plan_sku: String,
    /// The SKU of a credit pack, and its credits.
    pub credit_pack: (String, i64),
    /// An Offering with a demo allowance for the store's widget.
    pub demo_offering: String,
    /// Unique to this run: buyers and orders are named after it.
    pub run: String,
    /// What the second buyer binds her own tool with (T6).
    pub tools: ToolDesk,
}

/// The credential of the second buyer's ticket desk (T6): the desk answers it as [`DESK_TENANT`].
pub const DESK_CREDENTIAL: &str = "journey-bob-desk-credential";
/// Who the ticket desk says [`DESK_CREDENTIAL`] is.
pub const DESK_TENANT: &str = "bob";

/// A Shared Offering whose flow opens a ticket titled with the run's input in the buyer's own ticket desk, through
/// the connector gateway (binding `tickets`, tool `create_ticket`), its plan, and the desk: a real MCP server that
/// answers `Bearer <DESK_CREDENTIAL>` as [`DESK_TENANT`].
pub struct ToolDesk {
    pub offering: String,
    pub plan: String,
    /// The desk's MCP endpoint, on the platform's allow-list of connector hosts.
    pub url: String,
}

/// One acceptance case and how it went.
pub struct Step {
    pub id: &'static str,
    pub title: &'static str,
    /// What was shown, or what was wrong.
    pub outcome: Result<String, String>,
}

/// The journey's result.
pub struct Report {
    pub steps: Vec<Step>,
    /// Time to first value of each order: from the paid-order webhook to the first successful run.
    pub time_to_first_value: Vec<Duration>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.outcome.is_ok())
    }

    /// The report as people read it.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            let (mark, detail) = match &step.outcome {
                Ok(detail) => ("ok  ", detail),
                Err(error) => ("FAIL", error),
            };
            out.push_str(&format!(
                "{mark} {:<3} {}\n       {}\n",
                step.id,
                step.title,
                detail.replace('\n', "\n       ")
            ));
        }
        if let Some(figures) = percentiles(&self.time_to_first_value) {
            out.push_str(&format!("time to first value over {} orders: {figures}\n", self.time_to_first_value.len()));
        }
        out
    }
}

/// "p50 X ms, p95 Y ms, max Z ms" (nearest rank), or None without samples.
pub fn percentiles(samples: &[Duration]) -> Option<String> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    let last = *sorted.last()?;
    Some(format!("p50 {} ms, p95 {} ms, max {} ms", rank(0.5).as_millis(), rank(0.95).as_millis(), last.as_millis()))
}

/// The plan the journey's buyers buy, as its Offering says.
#[derive(Debug, Clone)]
pub struct Plan {
    pub offering: String,
    pub id: String,
    pub price: i64,
    pub included: i64,
    pub requests_per_minute: i32,
}

/// A buyer's Organization, Instance and API key.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub order: Order,
    pub organization: String,
    pub namespace: String,
    pub instance: String,
    pub key: String,
}

/// Runs T1-T9 against `platform`, then times `orders` paid orders in all (T1's included).
pub async fn run(platform: &Platform<'_>, orders: usize) -> Report {
    let mut journey = steps::Journey::new(platform);
    let mut report = Report { steps: Vec::new(), time_to_first_value: Vec::new() };
    for (id, title) in steps::STEPS {
        let outcome = journey.step(id).await.map_err(|e| format!("{e:#}"));
        let failed = outcome.is_err();
        report.steps.push(Step { id, title, outcome });
        if failed {
            // Later steps build on the earlier ones' state.
            break;
        }
    }
    report.time_to_first_value = journey.time_to_first_value.clone();
    if report.passed() {
        for number in report.time_to_first_value.len()..orders {
            let buyer = Buyer::new(&platform.run, &format!("buyer{number}"));
            match journey.first_value(&buyer, 100 + number as u32, &[(platform.plan_sku.as_str(), 1)]).await {
                Ok((_, took)) => report.time_to_first_value.push(took),
                Err(error) => {
                    let outcome = Err(format!("order {number} of {orders}: {error:#}"));
                    report.steps.push(Step { id: "TTFV", title: "time to first value", outcome });
                    break;
                }
            }
        }
    }
    report
}

/// The plan sold as `sku`, from the Offerings in the cluster.
async fn plan_of(client: &kube::Client, sku: &str) -> anyhow::Result<Plan> {
    let offerings = Api::<Offering>::all(client.clone()).list(&ListParams::default()).await?;
    for offering in offerings.items {
        let name = kube::ResourceExt::name_any(&offering);
        if let Some(plan) = offering.spec.plans.iter().find(|p| p.saleor_sku.as_deref() == Some(sku)) {
            return Ok(Plan {
                offering: name,
                id: plan.id.clone(),
                price: plan.credits_per_run,
                included: plan.included_credits,
                requests_per_minute: plan.requests_per_minute,
            });
        }
    }
    bail!("no Offering sells SKU {sku}: apply one whose plan has saleorSku {sku}")
}

/// Waits until Instance `namespace/name` is Ready with an API key issued, and returns the key's plaintext.
async fn ready_key(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<String> {
    let instances = Api::<Instance>::namespaced(client.clone(), namespace);
    let location = eventually(&format!("Instance {namespace}/{name} Ready with its API key"), || async {
        let status = instances.get_opt(name).await.ok()??.status?;
        let ready = cmp_crds::conditions::is_true(&status.conditions, cmp_crds::conditions::READY);
        ready.then(|| status.api_keys.first().map(|k| k.secret.clone())).flatten()
    })
    .await?;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace).get(&location.name).await?;
    let bytes = secret
        .data
        .and_then(|mut d| d.remove(&location.key))
        .with_context(|| format!("the Secret {namespace}/{} has no `{}`", location.name, location.key))?;
    String::from_utf8(bytes.0).context("the API key is not text")
}

/// Polls `check` every 100 ms until it gives a value, or fails naming `what` after [`CONVERGE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + CONVERGE;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {} s", CONVERGE.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let ms = |v: &[u64]| v.iter().map(|m| Duration::from_millis(*m)).collect::<Vec<_>>();
        assert_eq!(percentiles(&[]), None);
        assert_eq!(percentiles(&ms(&[7])).as_deref(), Some("p50 7 ms, p95 7 ms, max 7 ms"));
        let twenty: Vec<u64> = (1..=20).collect();
        assert_eq!(percentiles(&ms(&twenty)).as_deref(), Some("p50 10 ms, p95 19 ms, max 20 ms"));
    }
}
