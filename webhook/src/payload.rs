//! Saleor order events: which event a delivery is, and the order it carries.
//!
//! The body is the JSON of the app's subscription query (see
//! [`crate::manifest`]). Saleor sends the subscribed fields at the top level
//! (`{"order": {...}}`), or wrapped as `{"data": {"<event>": {"order": {...}}}}`
//! (for example `data.orderFullyPaid`); both are accepted. Only the fields
//! the provisioner needs are read; everything else is ignored.

use serde::Deserialize;
use serde_json::Value;

/// The most lines an order may carry; a larger order is refused as malformed.
pub const MAX_LINES: usize = 500;
/// The longest id, SKU or e-mail read from a payload.
pub const MAX_FIELD_LEN: usize = 255;

/// The Saleor events the provisioner subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    /// An order was placed: its SKUs are checked, nothing is created.
    Created,
    /// An order was paid in full: it becomes CRs.
    FullyPaid,
    /// An order was cancelled: its Instances are suspended and its unspent credits withdrawn.
    Cancelled,
}

impl OrderEvent {
    /// Every event, in the manifest's order.
    pub const ALL: [OrderEvent; 3] = [OrderEvent::Created, OrderEvent::FullyPaid, OrderEvent::Cancelled];

    /// The event as Saleor names it in the `Saleor-Event` header (lower case).
    pub fn header_value(self) -> &'static str {
        match self {
            OrderEvent::Created => "order_created",
            OrderEvent::FullyPaid => "order_fully_paid",
            OrderEvent::Cancelled => "order_cancelled",
        }
    }

    /// The event as the manifest's `asyncEvents` names it (upper case).
    pub fn manifest_name(self) -> &'static str {
        match self {
            OrderEvent::Created => "ORDER_CREATED",
            OrderEvent::FullyPaid => "ORDER_FULLY_PAID",
            OrderEvent::Cancelled => "ORDER_CANCELLED",
        }
    }

    /// The GraphQL type of the event, for the subscription query.
    pub fn graphql_type(self) -> &'static str {
        match self {
            OrderEvent::Created => "OrderCreated",
            OrderEvent::FullyPaid => "OrderFullyPaid",
            OrderEvent::Cancelled => "OrderCancelled",
        }
    }

    /// The key a wrapped payload nests the fields under (`data.<key>`).
    pub fn wrapper_key(self) -> &'static str {
        match self {
            OrderEvent::Created => "orderCreated",
            OrderEvent::FullyPaid => "orderFullyPaid",
            OrderEvent::Cancelled => "orderCancelled",
        }
    }

    /// The path segment of the event's webhook route (`/saleor/webhooks/<segment>`).
    pub fn route_segment(self) -> &'static str {
        match self {
            OrderEvent::Created => "order-created",
            OrderEvent::FullyPaid => "order-fully-paid",
            OrderEvent::Cancelled => "order-cancelled",
        }
    }

    /// The event a `Saleor-Event` header names (case-insensitive), if it is one of ours.
    pub fn from_header(value: &str) -> Option<OrderEvent> {
        Self::ALL.into_iter().find(|e| e.header_value().eq_ignore_ascii_case(value.trim()))
    }
}

/// An order, as far as the provisioner reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Saleor's global id of the order (for example `T3JkZXI6MQ==`).
    pub id: String,
    /// The order number people see (for example "1042"), when sent.
    pub number: Option<String>,
    /// The buyer's Saleor user id, when the buyer has an account.
    pub user_id: Option<String>,
    /// The buyer's e-mail: `user.email`, else the order's `userEmail`.
    pub email: Option<String>,
    /// The order's lines.
    pub lines: Vec<OrderLine>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    /// Saleor's global id of the line.
    pub id: String,
    /// The SKU: `variant.sku`, else the line's `productSku`. `None` for a product without one.
    pub sku: Option<String>,
    /// How many units were bought (at least 1).
    pub quantity: i64,
}

/// Why a payload cannot be read. Each is a request that will never succeed (400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    /// Not JSON, or not the shape of an order event.
    #[error("the body is not a Saleor order event: {0}")]
    Malformed(String),
    /// No `order` object at the top level or under `data.<event>`.
    #[error(
        "the body carries no order: expected {{\"order\": {{...}}}} or {{\"data\": {{\"{0}\": {{\"order\": {{...}}}}}}}}"
    )]
    MissingOrder(&'static str),
    /// The order has no id.
    #[error("the order has no id: the app's subscription query must select order {{ id }}")]
    MissingOrderId,
    /// A field is out of bounds.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOrder {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    number: Option<Value>,
    #[serde(default)]
    user_email: Option<String>,
    #[serde(default)]
    user: Option<RawUser>,
    #[serde(default)]
    lines: Vec<RawLine>,
}

#[derive(Deserialize)]
struct RawUser {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLine {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    quantity: Option<i64>,
    #[serde(default)]
    product_sku: Option<String>,
    #[serde(default)]
    variant: Option<RawVariant>,
}

#[derive(Deserialize)]
struct RawVariant {
    #[serde(default)]
    sku: Option<String>,
}

/// Reads the order of an `event` delivery from its raw body.
pub fn parse_order(event: OrderEvent, body: &[u8]) -> Result<Order, PayloadError> {
    let mut envelope: Value = serde_json::from_slice(body).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    let missing = || PayloadError::MissingOrder(event.wrapper_key());
    let envelope = object(&mut envelope, "the body")?;
    let order = match envelope.remove("order") {
        Some(order) => order,
        None => {
            let mut data = envelope.remove("data").ok_or_else(missing)?;
            let mut wrapped = object(&mut data, "data")?.remove(event.wrapper_key()).ok_or_else(missing)?;
            object(&mut wrapped, event.wrapper_key())?.remove("order").ok_or_else(missing)?
        }
    };
    order_of(shaped(order)?)
}

/// The JSON object in `value`; serde would also read a struct from an array, which Saleor never sends.
fn object<'v>(value: &'v mut Value, what: &str) -> Result<&'v mut serde_json::Map<String, Value>, PayloadError> {
    value.as_object_mut().ok_or_else(|| PayloadError::Malformed(format!("{what} must be a JSON object")))
}

/// Reads the order, refusing arrays where objects belong.
fn shaped(mut order: Value) -> Result<RawOrder, PayloadError> {
    let fields = object(&mut order, "order")?;
    if let Some(user) = fields.get_mut("user").filter(|u| !u.is_null()) {
        object(user, "order.user")?;
    }
    if let Some(lines) = fields.get_mut("lines").filter(|l| !l.is_null()) {
        let lines = lines.as_array_mut().ok_or_else(|| PayloadError::Malformed("order.lines must be a list".into()))?;
        for line in lines {
            let line = object(line, "each of order.lines")?;
            if let Some(variant) = line.get_mut("variant").filter(|v| !v.is_null()) {
                object(variant, "order.lines[].variant")?;
            }
        }
    }
    serde_json::from_value(order).map_err(|e| PayloadError::Malformed(e.to_string()))
}

fn order_of(raw: RawOrder) -> Result<Order, PayloadError> {
    let id = non_empty(raw.id).ok_or(PayloadError::MissingOrderId)?;
    bounded("order id", &id)?;
    if raw.lines.len() > MAX_LINES {
        return Err(PayloadError::Invalid(format!(
            "the order has {} lines; at most {MAX_LINES} are accepted",
            raw.lines.len()
        )));
    }
    let number = match raw.number {
        Some(Value::String(s)) => non_empty(Some(s)),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let (user_id, user_email) = raw.user.map_or((None, None), |u| (non_empty(u.id), non_empty(u.email)));
    let email = user_email.or_else(|| non_empty(raw.user_email));
    for (what, value) in [("order number", &number), ("user id", &user_id), ("e-mail", &email)] {
        if let Some(value) = value {
            bounded(what, value)?;
        }
    }
    let lines = raw.lines.into_iter().enumerate().map(|(i, l)| line_of(i, l)).collect::<Result<_, _>>()?;
    Ok(Order { id, number, user_id, email, lines })
}

fn line_of(index: usize, raw: RawLine) -> Result<OrderLine, PayloadError> {
    let id = non_empty(raw.id).ok_or_else(|| PayloadError::Invalid(format!("order line {index} has no id")))?;
    bounded("line id", &id)?;
    let sku = non_empty(raw.variant.and_then(|v| v.sku)).or_else(|| non_empty(raw.product_sku));
    if let Some(sku) = &sku {
        bounded("SKU", sku)?;
    }
    let quantity = raw.quantity.unwrap_or(1);
    if quantity < 1 {
        return Err(PayloadError::Invalid(format!("order line {id} has quantity {quantity}; it must be at least 1")));
    }
    Ok(OrderLine { id, sku, quantity })
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn bounded(what: &str, value: &str) -> Result<(), PayloadError> {
    if value.len() > MAX_FIELD_LEN {
        return Err(PayloadError::Invalid(format!(
            "the {what} is {} bytes long; at most {MAX_FIELD_LEN} are accepted",
            value.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP_LEVEL: &str = r#"{"order": {"id": "T3JkZXI6MQ==", "number": "1042", "userEmail": "guest@example.com",
        "user": {"id": "VXNlcjox", "email": "ada@example.com"},
        "lines": [{"id": "T3JkZXJMaW5lOjE=", "quantity": 1, "productSku": "old-sku", "variant": {"id": "x", "sku": "support-pro"}},
                  {"id": "T3JkZXJMaW5lOjI=", "quantity": 3, "productSku": "credits-1000", "variant": null}]}}"#;

    #[test]
    fn reads_the_top_level_shape() {
        let order = parse_order(OrderEvent::FullyPaid, TOP_LEVEL.as_bytes()).expect("parses");
        assert_eq!(order.id, "T3JkZXI6MQ==");
        assert_eq!(order.number.as_deref(), Some("1042"));
        assert_eq!(order.user_id.as_deref(), Some("VXNlcjox"));
        assert_eq!(order.email.as_deref(), Some("ada@example.com"), "the account's e-mail wins over userEmail");
        assert_eq!(order.lines[0].sku.as_deref(), Some("support-pro"), "the variant's SKU wins over productSku");
        assert_eq!(order.lines[1].sku.as_deref(), Some("credits-1000"));
        assert_eq!(order.lines[1].quantity, 3);
    }

    #[test]
    fn reads_the_wrapped_shape_under_the_events_key() {
        let wrapped = format!(r#"{{"data": {{"orderFullyPaid": {TOP_LEVEL}}}}}"#);
        assert_eq!(
            parse_order(OrderEvent::FullyPaid, wrapped.as_bytes()),
            parse_order(OrderEvent::FullyPaid, TOP_LEVEL.as_bytes())
        );
        assert_eq!(
            parse_order(OrderEvent::Cancelled, wrapped.as_bytes()),
            Err(PayloadError::MissingOrder("orderCancelled")),
            "a wrapper of another event is not read"
        );
    }

    #[test]
    fn a_guest_order_has_its_email_and_no_user() {
        let body =
            br#"{"order": {"id": "O1", "number": 7, "userEmail": " guest@example.com ", "user": null, "lines": []}}"#;
        let order = parse_order(OrderEvent::Created, body).expect("parses");
        assert_eq!(
            (order.user_id, order.email.as_deref(), order.number.as_deref()),
            (None, Some("guest@example.com"), Some("7"))
        );
    }

    #[test]
    fn bad_bodies_get_their_own_errors() {
        let e = OrderEvent::FullyPaid;
        assert!(matches!(parse_order(e, b"{not json"), Err(PayloadError::Malformed(_))));
        assert!(matches!(parse_order(e, b"[1,2]"), Err(PayloadError::Malformed(_))));
        assert!(
            matches!(parse_order(e, br#"[{"id": "O1"}]"#), Err(PayloadError::Malformed(_))),
            "serde would read a struct from an array"
        );
        assert!(matches!(parse_order(e, br#"{"order": ["O1"]}"#), Err(PayloadError::Malformed(_))));
        assert!(matches!(
            parse_order(e, br#"{"order": {"id": "O", "lines": [["L", 1]]}}"#),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(parse_order(e, br#"{"order": {"id": "O", "user": ["U"]}}"#), Err(PayloadError::Malformed(_))));
        assert_eq!(parse_order(e, b"{}"), Err(PayloadError::MissingOrder("orderFullyPaid")));
        assert_eq!(parse_order(e, br#"{"order": {"lines": []}}"#), Err(PayloadError::MissingOrderId));
        assert_eq!(parse_order(e, br#"{"order": {"id": "  "}}"#), Err(PayloadError::MissingOrderId));
        assert!(
            matches!(parse_order(e, br#"{"order": {"id": "O", "lines": [{"quantity": 1}]}}"#), Err(PayloadError::Invalid(m)) if m.contains("no id"))
        );
        assert!(
            matches!(parse_order(e, br#"{"order": {"id": "O", "lines": [{"id": "L", "quantity": 0}]}}"#), Err(PayloadError::Invalid(m)) if m.contains("at least 1"))
        );
        let long = format!(r#"{{"order": {{"id": "{}"}}}}"#, "x".repeat(MAX_FIELD_LEN + 1));
        assert!(matches!(parse_order(e, long.as_bytes()), Err(PayloadError::Invalid(m)) if m.contains("order id")));
    }

    #[test]
    fn events_are_named_as_saleor_names_them() {
        assert_eq!(OrderEvent::from_header("order_fully_paid"), Some(OrderEvent::FullyPaid));
        assert_eq!(OrderEvent::from_header("ORDER_CANCELLED"), Some(OrderEvent::Cancelled));
        assert_eq!(OrderEvent::from_header("order_updated"), None);
    }
}
