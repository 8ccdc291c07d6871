//! What a Wallet says, for people and programs (`kubectl cmp wallet`, the
//! buyer API): the figures the operator keeps, each grant with what is left
//! of it, the reversals, and each gateway replica's meter with its live
//! lease. Pure.

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::Wallet;

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
/// A Wallet as shown.
pub struct WalletView {
    pub organization: String,
    pub namespace: String,
    pub name: String,
    pub balance: i64,
    pub granted: i64,
    pub consumed: i64,
    pub leased: i64,
    pub overdraft: i64,
    /// The `Funded` condition: its status and reason.
    pub funded: Option<(String, String)>,
    pub grants: Vec<GrantView>,
    pub reversals: Vec<ReversalView>,
    pub meters: Vec<MeterView>,
    /// Credits consumed by the meters folded away.
    pub compacted: i64,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
/// A grant as shown.
pub struct GrantView {
    pub id: String,
    pub credits: i64,
    /// What is left of it (not consumed, reversed or expired).
    pub unspent: i64,
    pub source: String,
    pub order: Option<String>,
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
/// A reversal as shown.
pub struct ReversalView {
    pub id: String,
    pub grant: String,
    pub credits: i64,
    pub order: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
/// A gateway replica's meter as shown.
pub struct MeterView {
    /// The gateway replica.
    pub name: String,
    pub consumed: i64,
    pub runs: i64,
    /// Credits it holds on lease now (0 once the lease expired).
    pub leased: i64,
    pub lease_expires_at: Option<String>,
    pub updated_at: Option<String>,
}

/// What the Wallet says at `now` (pure).
pub fn view(organization: &str, wallet: &Wallet, now: Timestamp) -> WalletView {
    let status = wallet.status.clone().unwrap_or_default();
    let unspent = crate::credits::unspent(&wallet.spec.grants, &wallet.spec.reversals, status.consumed, now);
    let left = |id: &str| unspent.iter().find(|(g, _)| *g == id).map(|(_, n)| *n).unwrap_or(0);
    let funded = crate::conditions::find(&status.conditions, "Funded").map(|c| (c.status.clone(), c.reason.clone()));
    WalletView {
        organization: organization.to_string(),
        namespace: wallet.metadata.namespace.clone().unwrap_or_default(),
        name: wallet.metadata.name.clone().unwrap_or_default(),
        balance: status.balance,
        granted: status.granted,
        consumed: status.consumed,
        leased: status.leased,
        overdraft: wallet.spec.overdraft,
        funded,
        grants: wallet
            .spec
            .grants
            .iter()
            .map(|g| GrantView {
                id: g.id.clone(),
                credits: g.credits,
                unspent: left(&g.id),
                source: format!("{:?}", g.source),
                order: g.order_ref.clone(),
                expires_at: g.expires_at.as_ref().map(|t| t.0.to_string()),
            })
            .collect(),
        reversals: wallet
            .spec
            .reversals
            .iter()
            .map(|r| ReversalView {
                id: r.id.clone(),
                grant: r.grant.clone(),
                credits: r.credits,
                order: r.order_ref.clone(),
            })
            .collect(),
        meters: status
            .meters
            .iter()
            .map(|m| MeterView {
                name: m.name.clone(),
                consumed: m.consumed,
                runs: m.runs,
                leased: if crate::credits::lease_is_live(m, now) { m.lease } else { 0 },
                lease_expires_at: m.lease_expires_at.as_ref().map(|t| t.0.to_string()),
                updated_at: m.updated_at.as_ref().map(|t| t.0.to_string()),
            })
            .collect(),
        compacted: status.compacted.map(|c| c.consumed).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_wallet_shows_what_is_left_of_each_grant_and_only_live_leases() {
        let wallet: Wallet = serde_json::from_value(json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Wallet",
            "metadata": {"name": "acme", "namespace": "cmp-acme"},
            "spec": {"grants": [{"id": "starter", "credits": 100, "source": "Starter"},
                                {"id": "order-7", "credits": 50, "source": "SaleorOrder", "orderRef": "7"}]},
            "status": {"granted": 150, "consumed": 30, "balance": 120, "leased": 5,
                       "meters": [{"name": "gw-0", "consumed": 30, "runs": 30, "lease": 5,
                                   "leaseExpiresAt": "2026-01-01T00:01:00Z"},
                                  {"name": "gw-1", "consumed": 0, "runs": 0, "lease": 9,
                                   "leaseExpiresAt": "2026-01-01T00:00:10Z"}],
                       "conditions": [{"type": "Funded", "status": "True", "reason": "Funded", "message": "",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .expect("a Wallet");
        let now: Timestamp = "2026-01-01T00:00:30Z".parse().expect("a time");
        let v = view("acme", &wallet, now);
        assert_eq!((v.balance, v.granted, v.consumed), (120, 150, 30));
        let left: i64 = v.grants.iter().map(|g| g.unspent).sum();
        assert_eq!(left, 120, "what is left of the grants is the balance: {:?}", v.grants);
        assert_eq!(v.meters[0].leased, 5, "a live lease counts");
        assert_eq!(v.meters[1].leased, 0, "an expired lease does not");
        assert_eq!(v.funded, Some(("True".into(), "Funded".into())));
    }
}
