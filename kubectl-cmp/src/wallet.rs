//! `kubectl cmp wallet <org>`: the figures the operator keeps, each grant
//! with what is left of it, the reversals, and each gateway replica's meter
//! with its live lease.

use cmp_crds::Wallet;
use cmp_crds::names::{control_namespace, wallet_name};
use cmp_crds::wallet_view::{WalletView, view};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;

use crate::error::Error;
use crate::output::{Format, print};
use crate::{Outcome, Target};

/// The view for people (pure).
pub fn text(view: &WalletView) -> String {
    let mut out = format!(
        "Wallet {}/{} of Organization {}\n  balance {}  (granted {} - consumed {}; overdraft {})\n  leased now {}\n",
        view.namespace,
        view.name,
        view.organization,
        view.balance,
        view.granted,
        view.consumed,
        view.overdraft,
        view.leased
    );
    if let Some((status, reason)) = &view.funded {
        out.push_str(&format!("  Funded {status} {reason}\n"));
    }
    out.push_str("Grants:\n");
    for g in &view.grants {
        let order = g.order.as_deref().map(|o| format!(" order {o}")).unwrap_or_default();
        let expires = g.expires_at.as_deref().map(|e| format!(" expires {e}")).unwrap_or_default();
        out.push_str(&format!("  {} {} credits ({} left) {}{order}{expires}\n", g.id, g.credits, g.unspent, g.source));
    }
    if !view.reversals.is_empty() {
        out.push_str("Reversals:\n");
        for r in &view.reversals {
            out.push_str(&format!("  {} -{} credits of grant {}\n", r.id, r.credits, r.grant));
        }
    }
    out.push_str("Meters (one per gateway replica):\n");
    if view.meters.is_empty() {
        out.push_str("  none\n");
    }
    for m in &view.meters {
        out.push_str(&format!("  {} consumed {} in {} runs, leased {}\n", m.name, m.consumed, m.runs, m.leased));
    }
    if view.compacted > 0 {
        out.push_str(&format!("  folded meters consumed {}\n", view.compacted));
    }
    out
}

pub async fn show(target: &Target, organization: &str, format: Format) -> Result<Outcome, Error> {
    let namespace = control_namespace(organization);
    let name = wallet_name(organization);
    let wallet = Api::<Wallet>::namespaced(target.client.clone(), &namespace)
        .get_opt(&name)
        .await?
        .ok_or_else(|| Error::NotFound { kind: "Wallet", name: name.clone(), namespace: namespace.clone() })?;
    print(format, &view(organization, &wallet, Timestamp::now()), text)?;
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::wallet_view::{GrantView, MeterView};

    #[test]
    fn the_text_shows_the_balance_each_grant_and_each_meter() {
        let v = WalletView {
            organization: "acme".into(),
            namespace: "cmp-acme".into(),
            name: "acme".into(),
            balance: 120,
            granted: 150,
            consumed: 30,
            leased: 5,
            overdraft: 0,
            funded: Some(("True".into(), "Funded".into())),
            grants: vec![GrantView {
                id: "order-7".into(),
                credits: 50,
                unspent: 50,
                source: "SaleorOrder".into(),
                order: Some("7".into()),
                expires_at: None,
            }],
            reversals: vec![],
            meters: vec![MeterView {
                name: "gw-0".into(),
                consumed: 30,
                runs: 30,
                leased: 5,
                lease_expires_at: None,
                updated_at: None,
            }],
            compacted: 0,
        };
        let shown = text(&v);
        assert!(shown.contains("balance 120"), "{shown}");
        assert!(shown.contains("order-7 50 credits (50 left) SaleorOrder order 7"), "{shown}");
        assert!(shown.contains("gw-0 consumed 30 in 30 runs, leased 5"), "{shown}");
    }
}
