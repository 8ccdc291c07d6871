//! The Saleor events the webhook subscribes to, and each one's names: in
//! the `Saleor-Event` header, the manifest, the signed `__typename`, the
//! wrapped payload and the route.

/// The Saleor events the provisioner subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    /// An order was placed: its SKUs are checked, nothing is created.
    Created,
    /// Staff confirmed an order (stores that do not confirm orders automatically): provisioned when paid.
    Confirmed,
    /// An order was paid in full: it becomes CRs.
    FullyPaid,
    /// An order was cancelled: its Instances are suspended and its unspent credits withdrawn.
    Cancelled,
    /// Part of an order was refunded: the refunded lines' unspent credits are withdrawn.
    Refunded,
    /// An order was refunded in full: as a cancellation.
    FullyRefunded,
}

impl OrderEvent {
    /// Every event, in the manifest's order.
    pub const ALL: [OrderEvent; 6] = [
        OrderEvent::Created,
        OrderEvent::Confirmed,
        OrderEvent::FullyPaid,
        OrderEvent::Cancelled,
        OrderEvent::Refunded,
        OrderEvent::FullyRefunded,
    ];

    /// The event as Saleor names it in the `Saleor-Event` header (lower case).
    pub fn header_value(self) -> &'static str {
        match self {
            OrderEvent::Created => "order_created",
            OrderEvent::Confirmed => "order_confirmed",
            OrderEvent::FullyPaid => "order_fully_paid",
            OrderEvent::Cancelled => "order_cancelled",
            OrderEvent::Refunded => "order_refunded",
            OrderEvent::FullyRefunded => "order_fully_refunded",
        }
    }

    /// The event as the manifest's `asyncEvents` names it (upper case).
    pub fn manifest_name(self) -> String {
        self.header_value().to_ascii_uppercase()
    }

    /// The GraphQL type of the event: what the signed body's `__typename` says.
    pub fn graphql_type(self) -> &'static str {
        match self {
            OrderEvent::Created => "OrderCreated",
            OrderEvent::Confirmed => "OrderConfirmed",
            OrderEvent::FullyPaid => "OrderFullyPaid",
            OrderEvent::Cancelled => "OrderCancelled",
            OrderEvent::Refunded => "OrderRefunded",
            OrderEvent::FullyRefunded => "OrderFullyRefunded",
        }
    }

    /// The key a wrapped payload nests the fields under (`data.<key>`).
    pub fn wrapper_key(self) -> &'static str {
        match self {
            OrderEvent::Created => "orderCreated",
            OrderEvent::Confirmed => "orderConfirmed",
            OrderEvent::FullyPaid => "orderFullyPaid",
            OrderEvent::Cancelled => "orderCancelled",
            OrderEvent::Refunded => "orderRefunded",
            OrderEvent::FullyRefunded => "orderFullyRefunded",
        }
    }

    /// The path segment of the event's webhook route (`/saleor/webhooks/<segment>`).
    pub fn route_segment(self) -> &'static str {
        match self {
            OrderEvent::Created => "order-created",
            OrderEvent::Confirmed => "order-confirmed",
            OrderEvent::FullyPaid => "order-fully-paid",
            OrderEvent::Cancelled => "order-cancelled",
            OrderEvent::Refunded => "order-refunded",
            OrderEvent::FullyRefunded => "order-fully-refunded",
        }
    }

    /// The event a `Saleor-Event` header names (case-insensitive), if it is one of ours.
    pub fn from_header(value: &str) -> Option<OrderEvent> {
        Self::ALL.into_iter().find(|e| e.header_value().eq_ignore_ascii_case(value.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_named_as_saleor_names_them() {
        assert_eq!(OrderEvent::from_header("order_fully_paid"), Some(OrderEvent::FullyPaid));
        assert_eq!(OrderEvent::from_header("ORDER_CANCELLED"), Some(OrderEvent::Cancelled));
        assert_eq!(OrderEvent::from_header("order_updated"), None);
        for event in OrderEvent::ALL {
            assert_eq!(event.manifest_name(), event.header_value().to_ascii_uppercase());
            assert_eq!(event.route_segment().replace('-', "_"), event.header_value());
        }
    }
}
