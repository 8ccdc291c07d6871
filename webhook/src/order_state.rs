//! What a delivery may do, decided from what its signed body says: the
//! event (`__typename`) and the order's state (`status`, `chargeStatus`,
//! its refunds). Pure, so every rule is a unit test.
//!
//! Saleor signs only the body, and the `Saleor-Event` header and the route
//! are not signed: the body alone says which event it is. A body of one
//! event posted to another event's route is refused, and a body is acted on
//! only as far as the order's state allows:
//!
//! | event | acts when | otherwise |
//! |---|---|---|
//! | `ORDER_CREATED` | always: checks the lines, creates nothing | |
//! | `ORDER_FULLY_PAID`, `ORDER_CONFIRMED` | `chargeStatus` FULL or OVERCHARGED and `status` UNFULFILLED, PARTIALLY_FULFILLED or FULFILLED: provisions | nothing, 200 with why |
//! | `ORDER_CANCELLED` | `status` CANCELED: suspends and withdraws, and remembers the cancellation | nothing, 200 with why |
//! | `ORDER_FULLY_REFUNDED` | always: as a cancellation | |
//! | `ORDER_REFUNDED` | each completed refund that names lines: withdraws those lines | an amount-only refund: nothing, 200 with why |
//!
//! DRAFT orders are not placed, UNCONFIRMED ones wait for the store's
//! confirmation (`ORDER_CONFIRMED` provisions them once paid), EXPIRED ones
//! were never paid, and RETURNED or PARTIALLY_RETURNED ones went back: none
//! is provisioned. A body that lacks what a rule reads (the queries of an app
//! installed before these rules) cannot be decided: the webhook answers 503,
//! so that Saleor keeps the delivery, and never acts on it.

use crate::payload::{ChargeStatus, Delivery, OrderEvent, OrderStatus, Refund};

/// What a delivery does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Check the lines and report those that cannot be provisioned; create nothing.
    Check,
    /// Provision the order (unless a cancellation or full refund of it is remembered).
    Provision,
    /// Suspend the order's Instances, withdraw its unspent credits and remember why.
    Withdraw(Withdrawal),
    /// Withdraw what these refunds' lines have unspent.
    RefundLines(Vec<Refund>),
    /// Nothing: the order's state does not allow it (answered 200 with the reason).
    Nothing(String),
}

/// Why a whole order is withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawal {
    /// The store cancelled the order.
    Cancelled,
    /// The store refunded the order in full.
    FullyRefunded,
}

impl Withdrawal {
    /// The word used in records, reasons and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Withdrawal::Cancelled => "cancelled",
            Withdrawal::FullyRefunded => "refunded in full",
        }
    }
}

/// Why a delivery cannot be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecidable {
    /// The signed body is another event's (400: it will never fit this route).
    #[error(
        "the signed body is {signed:?}, not {expected}: it was posted to the {route} route, which acts only on {expected} bodies; nothing was changed"
    )]
    EventMismatch {
        /// What the body's `__typename` says.
        signed: String,
        /// The route's event type.
        expected: &'static str,
        /// The route's event.
        route: &'static str,
    },
    /// The body lacks fields a rule reads (503: never acted on, never lost).
    #[error(
        "the body does not select {}: the store still sends the queries of an older install of this app; the webhook brings its webhooks up to date with the app token (see the README, 'Stores installed before'), and answers 503 until then so that Saleor keeps the delivery",
        .0.join(", ")
    )]
    StateUnknown(Vec<&'static str>),
}

/// What a delivery to the route of `route` may do, given its signed body.
pub fn decide(route: OrderEvent, delivery: &Delivery) -> Result<Decision, Undecidable> {
    match delivery.typename.as_deref() {
        Some(signed) if signed != route.graphql_type() => {
            return Err(Undecidable::EventMismatch {
                signed: signed.to_string(),
                expected: route.graphql_type(),
                route: route.header_value(),
            });
        }
        // A check creates nothing, so an older query's body may still be checked.
        None if route == OrderEvent::Created => return Ok(Decision::Check),
        _ => {}
    }
    let order = &delivery.order;
    let mut missing = Vec::new();
    if delivery.typename.is_none() {
        missing.push("the event's __typename");
    }
    let needs_state = matches!(route, OrderEvent::FullyPaid | OrderEvent::Confirmed | OrderEvent::Cancelled);
    if needs_state && order.status.is_none() {
        missing.push("order.status");
    }
    if matches!(route, OrderEvent::FullyPaid | OrderEvent::Confirmed) && order.charge_status.is_none() {
        missing.push("order.chargeStatus");
    }
    if route == OrderEvent::Refunded && order.refunds.is_none() {
        missing.push("order.fulfillments and order.grantedRefunds");
    }
    if !missing.is_empty() {
        return Err(Undecidable::StateUnknown(missing));
    }
    Ok(match route {
        OrderEvent::Created => Decision::Check,
        OrderEvent::FullyPaid | OrderEvent::Confirmed => paid(order.status.as_ref(), order.charge_status.as_ref()),
        OrderEvent::Cancelled => match &order.status {
            Some(OrderStatus::Canceled) => Decision::Withdraw(Withdrawal::Cancelled),
            Some(status) => Decision::Nothing(format!(
                "the order's status is {}, not CANCELED: the store does not show it cancelled, so nothing is withdrawn",
                status.as_str()
            )),
            None => Decision::Nothing("the order's status is unknown".into()),
        },
        OrderEvent::FullyRefunded => Decision::Withdraw(Withdrawal::FullyRefunded),
        OrderEvent::Refunded => {
            let refunds: Vec<Refund> =
                order.refunds.iter().flatten().filter(|r| !r.lines.is_empty()).cloned().collect();
            if refunds.is_empty() {
                Decision::Nothing(
                    "the refund names no lines (an amount-only refund): no credits are withdrawn; a refund of the whole order arrives as ORDER_FULLY_REFUNDED, and a refund of lines through 'Refund products' names them".into(),
                )
            } else {
                Decision::RefundLines(refunds)
            }
        }
    })
}

/// Whether a paid (or confirmed) order is provisioned.
fn paid(status: Option<&OrderStatus>, charge: Option<&ChargeStatus>) -> Decision {
    let (Some(status), Some(charge)) = (status, charge) else {
        return Decision::Nothing("the order's state is unknown".into());
    };
    let why = match status {
        OrderStatus::Unfulfilled | OrderStatus::PartiallyFulfilled | OrderStatus::Fulfilled => {
            return match charge {
                ChargeStatus::Full | ChargeStatus::Overcharged => Decision::Provision,
                other => Decision::Nothing(format!(
                    "the order's chargeStatus is {}: it is not paid in full, so nothing is provisioned",
                    other.as_str()
                )),
            };
        }
        OrderStatus::Draft => "a draft order is not placed yet",
        OrderStatus::Unconfirmed => "the order awaits the store's confirmation: it is provisioned on ORDER_CONFIRMED",
        OrderStatus::Canceled => "the order is cancelled",
        OrderStatus::Expired => "the order expired unpaid",
        OrderStatus::Returned | OrderStatus::PartiallyReturned => "the order was returned",
        OrderStatus::Other(_) => "this version of the webhook does not know that status",
    };
    Decision::Nothing(format!("the order's status is {}: {why}; nothing is provisioned", status.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Order, RefundedLine};

    fn delivery(typename: Option<&str>, status: Option<OrderStatus>, charge: Option<ChargeStatus>) -> Delivery {
        Delivery {
            typename: typename.map(str::to_string),
            order: Order {
                id: "O1".into(),
                number: None,
                user_id: None,
                email: Some("ada@example.com".into()),
                lines: Vec::new(),
                status,
                charge_status: charge,
                refunds: Some(Vec::new()),
            },
        }
    }

    const PLACED: [OrderStatus; 3] =
        [OrderStatus::Unfulfilled, OrderStatus::PartiallyFulfilled, OrderStatus::Fulfilled];

    #[test]
    fn every_body_posted_to_another_events_route_is_refused() {
        for signed in OrderEvent::ALL {
            for route in OrderEvent::ALL {
                let body = delivery(Some(signed.graphql_type()), Some(OrderStatus::Canceled), Some(ChargeStatus::Full));
                let decided = decide(route, &body);
                if signed == route {
                    assert!(decided.is_ok(), "{signed:?} on its own route: {decided:?}");
                } else {
                    assert!(
                        matches!(&decided, Err(Undecidable::EventMismatch { signed: s, .. }) if s == signed.graphql_type()),
                        "{signed:?} on the {route:?} route: {decided:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn only_an_order_paid_in_full_and_placed_is_provisioned() {
        for route in [OrderEvent::FullyPaid, OrderEvent::Confirmed] {
            let t = Some(route.graphql_type());
            for status in PLACED {
                for charge in [ChargeStatus::Full, ChargeStatus::Overcharged] {
                    assert_eq!(
                        decide(route, &delivery(t, Some(status.clone()), Some(charge))),
                        Ok(Decision::Provision)
                    );
                }
                for charge in [ChargeStatus::None, ChargeStatus::Partial, ChargeStatus::Other("NEW".into())] {
                    let decided = decide(route, &delivery(t, Some(status.clone()), Some(charge.clone())));
                    assert!(
                        matches!(&decided, Ok(Decision::Nothing(why)) if why.contains(charge.as_str())),
                        "{charge:?}: {decided:?}"
                    );
                }
            }
            for status in [
                OrderStatus::Draft,
                OrderStatus::Unconfirmed,
                OrderStatus::Canceled,
                OrderStatus::Expired,
                OrderStatus::Returned,
                OrderStatus::PartiallyReturned,
                OrderStatus::Other("NEW".into()),
            ] {
                let decided = decide(route, &delivery(t, Some(status.clone()), Some(ChargeStatus::Full)));
                assert!(
                    matches!(&decided, Ok(Decision::Nothing(why)) if why.contains(status.as_str())),
                    "{status:?}: {decided:?}"
                );
            }
        }
    }

    #[test]
    fn only_an_order_the_store_shows_cancelled_is_withdrawn_on_cancellation() {
        let t = Some("OrderCancelled");
        assert_eq!(
            decide(OrderEvent::Cancelled, &delivery(t, Some(OrderStatus::Canceled), None)),
            Ok(Decision::Withdraw(Withdrawal::Cancelled))
        );
        for status in PLACED {
            assert!(matches!(
                decide(OrderEvent::Cancelled, &delivery(t, Some(status), Some(ChargeStatus::Full))),
                Ok(Decision::Nothing(_))
            ));
        }
        assert_eq!(
            decide(
                OrderEvent::FullyRefunded,
                &delivery(Some("OrderFullyRefunded"), Some(OrderStatus::Fulfilled), None)
            ),
            Ok(Decision::Withdraw(Withdrawal::FullyRefunded))
        );
    }

    #[test]
    fn a_refund_withdraws_the_lines_it_names_and_an_amount_only_refund_nothing() {
        let mut body = delivery(Some("OrderRefunded"), Some(OrderStatus::Fulfilled), Some(ChargeStatus::Partial));
        assert!(
            matches!(decide(OrderEvent::Refunded, &body), Ok(Decision::Nothing(why)) if why.contains("amount-only"))
        );
        let refund = Refund { id: "F1".into(), lines: vec![RefundedLine { line_id: "L1".into(), quantity: 1 }] };
        body.order.refunds = Some(vec![Refund { id: "F0".into(), lines: Vec::new() }, refund.clone()]);
        assert_eq!(decide(OrderEvent::Refunded, &body), Ok(Decision::RefundLines(vec![refund])));
    }

    #[test]
    fn a_body_of_an_older_query_is_never_acted_on_but_a_check_still_runs() {
        let old = delivery(None, None, Some(ChargeStatus::Full));
        assert_eq!(decide(OrderEvent::Created, &old), Ok(Decision::Check));
        for route in [OrderEvent::FullyPaid, OrderEvent::Confirmed, OrderEvent::Cancelled, OrderEvent::FullyRefunded] {
            let decided = decide(route, &old);
            assert!(
                matches!(&decided, Err(Undecidable::StateUnknown(missing)) if missing.contains(&"the event's __typename")),
                "{route:?}: {decided:?}"
            );
        }
        let mut no_refunds = delivery(Some("OrderRefunded"), Some(OrderStatus::Fulfilled), None);
        no_refunds.order.refunds = None;
        assert!(matches!(decide(OrderEvent::Refunded, &no_refunds), Err(Undecidable::StateUnknown(_))));
        let no_status = delivery(Some("OrderFullyPaid"), None, Some(ChargeStatus::Full));
        assert_eq!(decide(OrderEvent::FullyPaid, &no_status), Err(Undecidable::StateUnknown(vec!["order.status"])));
    }
}
