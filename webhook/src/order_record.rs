//! The provisioner's memory of orders the store withdrew (cancelled or
//! refunded in full), so that order state wins over arrival order: a
//! payment that arrives after the cancellation, or a signed body of the
//! payment posted again later, never provisions the order.
//!
//! A record is a ConfigMap in the webhook's namespace (next to the stores'
//! app-token Secrets), named `saleor-order-<order key>` from the store's API
//! URL and the order id ([`crate::order_crs::order_key`]), labelled
//! [`ORDER_RECORD_LABEL`]. It lives there, and not on a tenant's object,
//! because an unpaid order that is cancelled has no Organization (none is
//! created for it), and because no tenant role reaches that namespace. The
//! first record of an order is kept (a later delivery never rewrites it);
//! records are deleted by the webhook once older than its retention
//! (`--order-record-retention-days`, 400 days by default: longer than a
//! store keeps a delivery to retry by hand).

use std::collections::BTreeMap;
use std::time::Duration;

use cmp_crds::names::{MANAGED_BY_LABEL, PROVISIONER_MANAGER, SALEOR_API_URL_ANNOTATION, SALEOR_ORDER_ID_ANNOTATION};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::order_state::Withdrawal;
use crate::payload::Order;

/// The label every record carries (its value: the order key).
pub const ORDER_RECORD_LABEL: &str = "cmp.gsv.dev/saleor-order-record";

/// What a record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawn {
    /// Why the order was withdrawn.
    pub why: Withdrawal,
    /// When the webhook recorded it.
    pub at: Timestamp,
}

/// The record's name for an order key.
pub fn record_name(order_key: &str) -> String {
    format!("saleor-order-{order_key}")
}

/// The record that `order` of the store at `api_url` was withdrawn `why`, at `now`.
pub fn record(
    namespace: &str,
    api_url: &str,
    order_key: &str,
    order: &Order,
    why: Withdrawal,
    now: Timestamp,
) -> ConfigMap {
    let mut data = BTreeMap::from([
        ("state".to_string(), state_word(why).to_string()),
        ("recordedAt".to_string(), now.to_string()),
        ("orderId".to_string(), order.id.clone()),
    ]);
    if let Some(number) = &order.number {
        data.insert("orderNumber".into(), number.clone());
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(record_name(order_key)),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.into(), PROVISIONER_MANAGER.into()),
                (ORDER_RECORD_LABEL.into(), order_key.into()),
            ])),
            annotations: Some(BTreeMap::from([
                (SALEOR_API_URL_ANNOTATION.into(), api_url.into()),
                (SALEOR_ORDER_ID_ANNOTATION.into(), order.id.clone()),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    }
}

fn state_word(why: Withdrawal) -> &'static str {
    match why {
        Withdrawal::Cancelled => "Cancelled",
        Withdrawal::FullyRefunded => "FullyRefunded",
    }
}

/// What a record says, if it is one (`None` for a ConfigMap that is not a readable record).
pub fn read(record: &ConfigMap) -> Option<Withdrawn> {
    let data = record.data.as_ref()?;
    let why = match data.get("state")?.as_str() {
        "Cancelled" => Withdrawal::Cancelled,
        "FullyRefunded" => Withdrawal::FullyRefunded,
        _ => return None,
    };
    let at = data.get("recordedAt")?.parse().ok()?;
    Some(Withdrawn { why, at })
}

/// Whether a record recorded at `at` is past `retention` at `now`.
pub fn expired(at: Timestamp, retention: Duration, now: Timestamp) -> bool {
    SignedDuration::try_from(retention).is_ok_and(|r| now.duration_since(at) > r)
}

/// Reads and writes the records in one namespace.
#[derive(Clone)]
pub struct OrderRecords {
    api: Api<ConfigMap>,
    namespace: String,
}

impl OrderRecords {
    /// The records in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self { api: Api::namespaced(client, namespace), namespace: namespace.into() }
    }

    /// The order's record, if the store withdrew it.
    pub async fn recall(&self, order_key: &str) -> Result<Option<Withdrawn>, kube::Error> {
        Ok(self.api.get_opt(&record_name(order_key)).await?.as_ref().and_then(read))
    }

    /// Records that the order was withdrawn, unless it was already (the first record is kept).
    pub async fn remember(
        &self,
        api_url: &str,
        order_key: &str,
        order: &Order,
        why: Withdrawal,
    ) -> Result<(), kube::Error> {
        let record = record(&self.namespace, api_url, order_key, order, why, Timestamp::now());
        let params = PostParams { field_manager: Some(PROVISIONER_MANAGER.into()), ..PostParams::default() };
        match self.api.create(&params, &record).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Deletes the records older than `retention`; answers how many.
    pub async fn sweep(&self, retention: Duration) -> Result<usize, kube::Error> {
        let now = Timestamp::now();
        let records = self.api.list(&ListParams::default().labels(ORDER_RECORD_LABEL)).await?;
        let mut deleted = 0;
        for record in records.items {
            if read(&record).is_some_and(|r| expired(r.at, retention, now)) {
                match self.api.delete(&record.name_any(), &DeleteParams::default()).await {
                    Ok(_) => deleted += 1,
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(deleted)
    }

    /// Sweeps now and then every `every`, for as long as the process runs.
    pub async fn sweep_forever(self, retention: Duration, every: Duration) {
        loop {
            match self.sweep(retention).await {
                Ok(deleted) => tracing::info!(deleted, namespace = %self.namespace, "swept expired order records"),
                Err(error) => {
                    tracing::warn!(%error, namespace = %self.namespace, "sweeping order records failed; trying again later")
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Order {
        Order {
            id: "T3JkZXI6MQ==".into(),
            number: Some("7".into()),
            user_id: None,
            email: Some("ada@example.com".into()),
            lines: Vec::new(),
            status: None,
            charge_status: None,
            refunds: None,
        }
    }

    #[test]
    fn a_record_says_what_was_withdrawn_and_when() {
        let now: Timestamp = "2026-12-02T10:00:00Z".parse().expect("a time");
        for why in [Withdrawal::Cancelled, Withdrawal::FullyRefunded] {
            let record = record("cmp-system", "https://shop/graphql/", "0123456789abcdef", &order(), why, now);
            assert_eq!(record.name_any(), "saleor-order-0123456789abcdef");
            assert_eq!(record.labels().get(ORDER_RECORD_LABEL).map(String::as_str), Some("0123456789abcdef"));
            assert_eq!(read(&record), Some(Withdrawn { why, at: now }));
        }
        assert_eq!(read(&ConfigMap::default()), None, "a ConfigMap without data is no record");
    }

    #[test]
    fn a_record_expires_only_after_its_retention() {
        let at: Timestamp = "2026-01-01T00:00:00Z".parse().expect("a time");
        let day = Duration::from_secs(86_400);
        assert!(!expired(at, 400 * day, "2027-01-01T00:00:00Z".parse().expect("a time")));
        assert!(expired(at, 400 * day, "2027-02-10T00:00:00Z".parse().expect("a time")));
    }
}
