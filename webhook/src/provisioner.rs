//! The provisioner: carries out what [`crate::order_crs`] derives from an
//! order, against the API server.
//!
//! Every step is idempotent, so a redelivery, or a retry of a delivery that
//! failed half-way, does exactly what is left:
//! - objects are created only when absent (a 409 means done, and an existing
//!   object is never overwritten: the buyer may have edited it since);
//! - grants and reversals are appended only when their id is missing, with
//!   the Wallet's resourceVersion as a precondition (a 409 re-reads and
//!   tries again).
//!
//! The buyer's control namespace and Wallet are the operator's: after
//! creating the Organization the provisioner waits for the Wallet, and
//! answers 503 (Saleor retries) if it does not come.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cmp_crds::names::{PROVISIONER_MANAGER, SALEOR_ORDER_LABEL, control_namespace};
use cmp_crds::wallet::Reversal;
use cmp_crds::{Instance, Offering, Organization, Project, Wallet};
use futures::future::try_join_all;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;

use crate::catalog::{Catalog, CreditPack, LineProblem};
use crate::line_events;
use crate::metrics::Metrics;
use crate::order_crs::{self, NoBuyer, OrderCrs};
use crate::order_record::OrderRecords;
use crate::order_state::Withdrawal;
use crate::payload::{Order, OrderLine, Refund};
use crate::store_suspension;

/// How often a Wallet append is retried after a conflicting write.
const APPEND_ATTEMPTS: usize = 10;

/// Why an order could not be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The order names no buyer: it will never succeed (400).
    #[error(transparent)]
    NoBuyer(#[from] NoBuyer),
    /// The API server refused or could not be reached (503: Saleor retries).
    #[error("{action}: {source}")]
    Kube {
        /// What the provisioner was doing.
        action: String,
        /// The error.
        source: kube::Error,
    },
    /// The operator did not create the buyer's Wallet in time (503: Saleor retries).
    #[error(
        "the operator has not created Wallet {namespace}/{name} within {waited:?}: check that cmp-operator is running; Saleor will deliver the order again"
    )]
    WalletMissing {
        /// The control namespace.
        namespace: String,
        /// The Wallet's name.
        name: String,
        /// How long the provisioner waited.
        waited: Duration,
    },
    /// The Wallet kept changing under the append (503: Saleor retries).
    #[error("Wallet {0} changed under {APPEND_ATTEMPTS} attempts to append to it; Saleor will deliver the order again")]
    Contended(String),
    /// A refund arrived before the payment it refunds was provisioned (503: Saleor retries, and the payment's
    /// delivery, retried too, provisions it first).
    #[error(
        "order {order} was refunded, but its payment has not been provisioned yet (grants {} are not in the buyer's Wallet): Saleor delivers the refund again",
        missing.join(", ")
    )]
    NotYetProvisioned {
        /// The order.
        order: String,
        /// The grants the refunded lines must have.
        missing: Vec<String>,
    },
}

fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ProvisionError {
    let action = action.into();
    move |source| ProvisionError::Kube { action, source }
}

/// What a delivery did, as the webhook answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The buyer's Organization, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// The order's Instances (created, found or suspended).
    pub instances: Vec<String>,
    /// Grants this delivery appended (0 on a redelivery).
    pub grants_appended: usize,
    /// Reversals this delivery appended.
    pub reversals_appended: usize,
    /// Lines that cannot be provisioned, with why.
    pub problems: Vec<String>,
    /// Lines whose Offering is not Ready: their Instances wait, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
    /// True when a cancellation found nothing of the order.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unknown_order: bool,
    /// True when this delivery recorded that the store withdrew the order.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub remembered: bool,
    /// Why nothing was done, when the order's state did not allow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nothing_done: Option<String>,
}

/// How the provisioner behaves.
#[derive(Debug, Clone, Default)]
pub struct ProvisionerSettings {
    /// The credit packs on sale.
    pub credit_packs: Vec<CreditPack>,
    /// How long a paid order waits for the operator to create the buyer's Wallet.
    pub wallet_wait: Duration,
    /// Labels put on every Organization the provisioner creates (for example
    /// to match the operator's `--organization-selector`).
    pub organization_labels: BTreeMap<String, String>,
}

/// Carries out orders against the API server.
pub struct Provisioner {
    client: kube::Client,
    organization_labels: BTreeMap<String, String>,
    offerings: Store<Offering>,
    credit_packs: Vec<CreditPack>,
    wallet_wait: Duration,
    records: OrderRecords,
    metrics: Arc<Metrics>,
}

impl Provisioner {
    /// A provisioner reading Offerings from `offerings` (a watch cache),
    /// putting `organization_labels` on the Organizations it creates, and
    /// keeping its order records in `records`.
    pub fn new(
        client: kube::Client,
        offerings: Store<Offering>,
        records: OrderRecords,
        settings: ProvisionerSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let ProvisionerSettings { credit_packs, wallet_wait, organization_labels } = settings;
        Self { client, organization_labels, offerings, credit_packs, wallet_wait, records, metrics }
    }

    fn catalog(&self) -> Catalog {
        Catalog::new(&self.offerings.state(), &self.credit_packs)
    }

    /// `ORDER_CREATED`: reports the lines that could not be provisioned. Creates nothing.
    pub async fn check(&self, api_url: &str, order: &Order) -> Result<Outcome, ProvisionError> {
        let crs = order_crs::order_crs(api_url, order, &self.catalog())?;
        let org = Api::<Organization>::all(self.client.clone())
            .get_opt(&crs.organization.name_any())
            .await
            .map_err(kube("reading the buyer's Organization"))?;
        self.report(order, &crs.problems, org.as_ref()).await;
        Ok(Outcome {
            organization: org.map(|o| o.name_any()),
            problems: crs.problems.iter().map(|(l, p)| format!("line {}: {p}", l.id)).collect(),
            ..Outcome::default()
        })
    }

    /// An order paid in full: the buyer's Organization, its default Project,
    /// an Instance per plan line and a grant per line, each exactly once;
    /// nothing when the store withdrew the order, whenever that arrived.
    pub async fn provision(&self, api_url: &str, order: &Order) -> Result<Outcome, ProvisionError> {
        let order_key = order_crs::order_key(api_url, &order.id);
        if let Some(withdrawn) = self.recall(&order_key).await? {
            return Ok(Outcome {
                nothing_done: Some(format!(
                    "the store {} this order (recorded at {}): it is never provisioned",
                    withdrawn.why.as_str(),
                    withdrawn.at
                )),
                ..Outcome::default()
            });
        }
        let crs = order_crs::order_crs(api_url, order, &self.catalog())?;
        let org = self.organization(&crs).await?;
        let (ns, wallet_name) = (control_namespace(&org.name_any()), cmp_crds::names::wallet_name(&org.name_any()));
        self.await_wallet(&ns, &wallet_name).await?;
        create_if_absent(&Api::<Project>::namespaced(self.client.clone(), &ns), &crs.project).await?;
        let instances = Api::<Instance>::namespaced(self.client.clone(), &ns);
        try_join_all(crs.instances.iter().map(|i| create_if_absent(&instances, i))).await?;
        let wallets = Api::<Wallet>::namespaced(self.client.clone(), &ns);
        let grants_appended = append(&wallets, &wallet_name, "grants", |wallet| {
            let have: Vec<&str> = wallet.spec.grants.iter().map(|g| g.id.as_str()).collect();
            let missing: Vec<_> = crs.grants.iter().filter(|g| !have.contains(&g.id.as_str())).cloned().collect();
            (!missing.is_empty()).then(|| {
                let all: Vec<_> = wallet.spec.grants.iter().cloned().chain(missing.iter().cloned()).collect();
                (json!({"spec": {"grants": all}}), missing.len())
            })
        })
        .await?;
        self.report(order, &crs.problems, Some(&org)).await;
        self.report_not_ready(order, &crs.not_ready, &org).await;
        let provisioned = Outcome {
            organization: Some(org.name_any()),
            instances: crs.instances.iter().map(|i| i.name_any()).collect(),
            grants_appended,
            problems: crs.problems.iter().map(|(l, p)| format!("line {}: {p}", l.id)).collect(),
            waiting: crs.not_ready.iter().map(|(l, why)| format!("line {}: {why}", l.id)).collect(),
            ..Outcome::default()
        };
        // A withdrawal that arrived while this one provisioned listed the Instances before they existed: undo
        // what it could not see.
        match self.recall(&order_key).await? {
            None => Ok(provisioned),
            Some(withdrawn) => {
                let undone = self.withdraw(api_url, order, withdrawn.why).await?;
                Ok(Outcome { reversals_appended: undone.reversals_appended, ..provisioned })
            }
        }
    }

    async fn recall(&self, order_key: &str) -> Result<Option<crate::order_record::Withdrawn>, ProvisionError> {
        self.records.recall(order_key).await.map_err(kube("reading the order's record"))
    }

    /// An order the store cancelled or refunded in full: remembers it, so
    /// that no later payment provisions it, then suspends the order's
    /// Instances and withdraws its unspent credits with reversals. An order
    /// never provisioned is only remembered.
    pub async fn withdraw(&self, api_url: &str, order: &Order, why: Withdrawal) -> Result<Outcome, ProvisionError> {
        let order_key = order_crs::order_key(api_url, &order.id);
        self.records.remember(api_url, &order_key, order, why).await.map_err(kube("recording the withdrawal"))?;
        let org_name = order_crs::organization_name(api_url, order)?;
        let Some(found) = self.order_instances(&org_name, &order_key).await? else {
            return Ok(Outcome { unknown_order: true, remembered: true, ..Outcome::default() });
        };
        let ns = control_namespace(&org_name);
        let not_yet = found.iter().filter(|i| cmp_crds::suspension::by_store(i).is_none());
        self.suspend(&ns, not_yet, &store_suspension::why(order, why)).await?;
        let wallets = Api::<Wallet>::namespaced(self.client.clone(), &ns);
        let prefix = format!("{}.", order_crs::grant_prefix(&order_key));
        let mut had_grants = false;
        let reversals_appended = match wallets.get_opt(&org_name).await.map_err(kube("reading the Wallet"))? {
            None => 0,
            Some(wallet) => {
                had_grants = wallet.spec.grants.iter().any(|g| g.id.starts_with(&prefix));
                append(&wallets, &org_name, "reversals", |wallet| {
                    let new = order_crs::withdrawal_reversals(&order_key, order, why, wallet, Timestamp::now());
                    with_reversals(wallet, new)
                })
                .await?
            }
        };
        Ok(Outcome {
            organization: Some(org_name),
            instances: found.iter().map(|i| i.name_any()).collect(),
            reversals_appended,
            unknown_order: found.is_empty() && !had_grants,
            remembered: true,
            ..Outcome::default()
        })
    }

    /// Refunds that name lines: withdraws what each refunded line's grant has
    /// unspent, up to the refunded units' credits, once per refund and line;
    /// suspends the Instance of a plan line refunded in full.
    pub async fn refund_lines(
        &self,
        api_url: &str,
        order: &Order,
        refunds: &[Refund],
    ) -> Result<Outcome, ProvisionError> {
        let order_key = order_crs::order_key(api_url, &order.id);
        let org_name = order_crs::organization_name(api_url, order)?;
        // The grants the refunded lines carry credits in: until they are in the Wallet, the payment was not
        // provisioned yet (deliveries arrive in any order), and the refund would be lost if answered now.
        let crs = order_crs::order_crs(api_url, order, &self.catalog())?;
        let expected = order_crs::refunded_grants(&crs, refunds);
        let found = self.order_instances(&org_name, &order_key).await?;
        let ns = control_namespace(&org_name);
        let wallets = Api::<Wallet>::namespaced(self.client.clone(), &ns);
        let wallet = match &found {
            Some(_) => wallets.get_opt(&org_name).await.map_err(kube("reading the Wallet"))?,
            None => None,
        };
        let have: Vec<&str> = wallet.iter().flat_map(|w| w.spec.grants.iter().map(|g| g.id.as_str())).collect();
        let missing: Vec<String> = expected.into_iter().filter(|id| !have.contains(&id.as_str())).collect();
        if !missing.is_empty() {
            let order = order.number.as_ref().map_or_else(|| order.id.clone(), |n| format!("#{n}"));
            return Err(ProvisionError::NotYetProvisioned { order, missing });
        }
        let Some(found) = found else {
            return Ok(Outcome { unknown_order: true, ..Outcome::default() });
        };
        let refunded_in_full = order_crs::lines_refunded_in_full(order, refunds);
        let to_suspend: Vec<&Instance> = found
            .iter()
            .filter(|i| cmp_crds::suspension::by_store(i).is_none())
            .filter(|i| {
                let line = i.annotations().get(cmp_crds::names::SALEOR_LINE_ID_ANNOTATION);
                line.is_some_and(|l| refunded_in_full.contains(l))
            })
            .collect();
        let suspended: Vec<String> = to_suspend.iter().map(|i| i.name_any()).collect();
        self.suspend(&ns, to_suspend.into_iter(), &store_suspension::why_line_refunded(order)).await?;
        let reversals_appended = match wallet {
            None => 0,
            Some(_) => {
                append(&wallets, &org_name, "reversals", |wallet| {
                    with_reversals(
                        wallet,
                        order_crs::refund_reversals(&order_key, order, refunds, wallet, Timestamp::now()),
                    )
                })
                .await?
            }
        };
        Ok(Outcome { organization: Some(org_name), instances: suspended, reversals_appended, ..Outcome::default() })
    }

    /// Moves the suspensions the provisioner wrote in `spec.suspended` before
    /// the store's suspension had its own place into that place; answers how
    /// many. Run once when the webhook starts.
    pub async fn move_store_suspensions(&self) -> Result<usize, ProvisionError> {
        let all = Api::<Instance>::all(self.client.clone());
        let ordered = all
            .list(&ListParams::default().labels(SALEOR_ORDER_LABEL))
            .await
            .map_err(kube("listing ordered Instances"))?;
        let params = PatchParams { field_manager: Some(PROVISIONER_MANAGER.into()), ..PatchParams::default() };
        let mut moved = 0;
        for instance in ordered.items.iter().filter(|i| store_suspension::moved_from_spec(i)) {
            let (ns, name) = (instance.namespace().unwrap_or_default(), instance.name_any());
            let patch = Patch::Merge(store_suspension::move_patch(instance));
            Api::<Instance>::namespaced(self.client.clone(), &ns)
                .patch(&name, &params, &patch)
                .await
                .map_err(kube(format!("moving the store's suspension of Instance {ns}/{name}")))?;
            tracing::info!(instance = %name, namespace = %ns, "moved the store's suspension out of spec.suspended");
            moved += 1;
        }
        Ok(moved)
    }

    /// The order's Instances in the buyer's control namespace; `None` when the buyer has no Organization.
    async fn order_instances(&self, org_name: &str, order_key: &str) -> Result<Option<Vec<Instance>>, ProvisionError> {
        let org = Api::<Organization>::all(self.client.clone())
            .get_opt(org_name)
            .await
            .map_err(kube("reading the buyer's Organization"))?;
        if org.is_none() {
            return Ok(None);
        }
        let instances = Api::<Instance>::namespaced(self.client.clone(), &control_namespace(org_name));
        let found = instances
            .list(&ListParams::default().labels(&format!("{SALEOR_ORDER_LABEL}={order_key}")))
            .await
            .map_err(kube("listing the order's Instances"))?;
        Ok(Some(found.items))
    }

    /// Suspends `instances` in `ns` for the store, `why` (the annotation only the provisioner may write).
    async fn suspend(
        &self,
        ns: &str,
        instances: impl Iterator<Item = &Instance>,
        why: &str,
    ) -> Result<(), ProvisionError> {
        let api = Api::<Instance>::namespaced(self.client.clone(), ns);
        let suspend = Patch::Merge(store_suspension::suspend_patch(why));
        let params = PatchParams { field_manager: Some(PROVISIONER_MANAGER.into()), ..PatchParams::default() };
        try_join_all(
            instances.map(|i| {
                let name = i.name_any();
                let (api, suspend, params) = (&api, &suspend, &params);
                async move {
                    api.patch(&name, params, suspend).await.map_err(kube(format!("suspending Instance {ns}/{name}")))
                }
            }),
        )
        .await?;
        Ok(())
    }

    /// Finds or creates the buyer's Organization (never overwriting one that exists).
    async fn organization(&self, crs: &OrderCrs) -> Result<Organization, ProvisionError> {
        let orgs = Api::<Organization>::all(self.client.clone());
        let name = crs.organization.name_any();
        let mut wanted = crs.organization.clone();
        wanted.labels_mut().extend(self.organization_labels.clone());
        match orgs.create(&post_params(), &wanted).await {
            Ok(org) => {
                tracing::info!(organization = %name, "created the buyer's Organization");
                Ok(org)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                orgs.get(&name).await.map_err(kube(format!("reading Organization {name}")))
            }
            Err(source) => Err(ProvisionError::Kube { action: format!("creating Organization {name}"), source }),
        }
    }

    /// Waits (on a watch) until the operator has created the buyer's Wallet.
    async fn await_wallet(&self, namespace: &str, name: &str) -> Result<(), ProvisionError> {
        let wallets = Api::<Wallet>::namespaced(self.client.clone(), namespace);
        if wallets.get_opt(name).await.map_err(kube("reading the Wallet"))?.is_some() {
            return Ok(());
        }
        let exists = kube::runtime::wait::await_condition(wallets, name, |w: Option<&Wallet>| w.is_some());
        match tokio::time::timeout(self.wallet_wait, exists).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(ProvisionError::Kube {
                action: "watching for the Wallet".into(),
                source: kube::Error::Service(Box::new(error)),
            }),
            Err(_) => Err(ProvisionError::WalletMissing {
                namespace: namespace.into(),
                name: name.into(),
                waited: self.wallet_wait,
            }),
        }
    }

    /// Logs, counts and (on the Organization, when it exists) records each
    /// line that cannot be provisioned: one Event per line, named from the
    /// order and the line, so redeliveries, replicas and restarts add none.
    async fn report(&self, order: &Order, problems: &[(OrderLine, LineProblem)], org: Option<&Organization>) {
        for (line, problem) in problems {
            tracing::warn!(order = %order.id, number = order.number.as_deref().unwrap_or(""), line = %line.id,
                sku = line.sku.as_deref().unwrap_or(""), problem = %problem, "an order line cannot be provisioned");
            self.metrics.unprovisioned_line(problem.kind());
            if let Some(org) = org {
                let (reason, what) = (line_events::NOT_PROVISIONED, problem.to_string());
                let event = line_events::line_event(order, line, reason, &what, org, Timestamp::now());
                if let Err(error) = line_events::publish(&self.client, &event).await {
                    tracing::warn!(%error, "publishing an event failed");
                }
            }
        }
    }

    /// Logs, counts and records on the Organization each plan line whose Offering is not Ready.
    async fn report_not_ready(&self, order: &Order, lines: &[(OrderLine, String)], org: &Organization) {
        for (line, why) in lines {
            tracing::warn!(order = %order.id, number = order.number.as_deref().unwrap_or(""), line = %line.id,
                sku = line.sku.as_deref().unwrap_or(""), why = %why, "an order line's Offering is not Ready");
            self.metrics.offering_not_ready_line();
            let event =
                line_events::line_event(order, line, line_events::OFFERING_NOT_READY, why, org, Timestamp::now());
            if let Err(error) = line_events::publish(&self.client, &event).await {
                tracing::warn!(%error, "publishing an event failed");
            }
        }
    }
}

/// The patch that appends `new` to the Wallet's reversals, and how many, or `None` when there are none.
fn with_reversals(wallet: &Wallet, new: Vec<Reversal>) -> Option<(serde_json::Value, usize)> {
    (!new.is_empty()).then(|| {
        let all: Vec<_> = wallet.spec.reversals.iter().cloned().chain(new.iter().cloned()).collect();
        (json!({"spec": {"reversals": all}}), new.len())
    })
}

fn post_params() -> PostParams {
    PostParams { field_manager: Some(PROVISIONER_MANAGER.into()), ..PostParams::default() }
}

/// Creates `object` unless an object of its name exists.
async fn create_if_absent<K>(api: &Api<K>, object: &K) -> Result<(), ProvisionError>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + Serialize + std::fmt::Debug,
{
    let what = format!("{} {}/{}", K::kind(&()), object.namespace().unwrap_or_default(), object.name_any());
    match api.create(&post_params(), object).await {
        Ok(_) => {
            tracing::info!(object = %what, "created");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(ProvisionError::Kube { action: format!("creating {what}"), source }),
    }
}

/// Appends to a Wallet list: `change` says what the whole list becomes (and
/// how many entries it adds) given the current Wallet, or `None` when
/// nothing is missing. Written as a merge patch with the read
/// resourceVersion, so a concurrent append is never lost: a 409 reads again.
async fn append<F>(wallets: &Api<Wallet>, name: &str, what: &str, change: F) -> Result<usize, ProvisionError>
where
    F: Fn(&Wallet) -> Option<(serde_json::Value, usize)>,
{
    let params = PatchParams { field_manager: Some(PROVISIONER_MANAGER.into()), ..PatchParams::default() };
    for _ in 0..APPEND_ATTEMPTS {
        let wallet = wallets.get(name).await.map_err(kube(format!("reading Wallet {name}")))?;
        let Some((mut patch, added)) = change(&wallet) else { return Ok(0) };
        patch["metadata"] = json!({"resourceVersion": wallet.resource_version()});
        match wallets.patch(name, &params, &Patch::Merge(patch)).await {
            Ok(_) => {
                tracing::info!(wallet = name, added, "appended {what}");
                return Ok(added);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(source) => {
                return Err(ProvisionError::Kube { action: format!("appending {what} to Wallet {name}"), source });
            }
        }
    }
    Err(ProvisionError::Contended(name.into()))
}
