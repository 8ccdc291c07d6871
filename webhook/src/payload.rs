//! Saleor order events: which event a delivery is, and the order it carries.
//!
//! The body is the JSON of the app's subscription query (see
//! [`crate::manifest`]). Saleor sends the subscribed fields at the top level
//! (`{"order": {...}}`), or wrapped as `{"data": {"<event>": {"order": {...}}}}`
//! (for example `data.orderFullyPaid`); both are accepted. Only the fields
//! the provisioner needs are read; everything else is ignored.

use serde::Deserialize;
use serde_json::Value;

pub use crate::event::OrderEvent;

/// The most lines an order may carry; a larger order is refused as malformed.
pub const MAX_LINES: usize = 500;
/// The longest id, SKU or e-mail read from a payload.
pub const MAX_FIELD_LEN: usize = 255;

/// An order's `status`, as Saleor 3.21 names it (`OrderStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderStatus {
    /// Being put together by staff; not placed.
    Draft,
    /// Placed, awaiting the store's confirmation.
    Unconfirmed,
    /// Placed and confirmed, nothing shipped.
    Unfulfilled,
    /// Some lines fulfilled.
    PartiallyFulfilled,
    /// Some lines returned.
    PartiallyReturned,
    /// Every line returned.
    Returned,
    /// Every line fulfilled.
    Fulfilled,
    /// Cancelled.
    Canceled,
    /// Expired unpaid.
    Expired,
    /// A value this version does not know: never acted on.
    Other(String),
}

impl OrderStatus {
    fn parse(value: &str) -> Self {
        match value {
            "DRAFT" => Self::Draft,
            "UNCONFIRMED" => Self::Unconfirmed,
            "UNFULFILLED" => Self::Unfulfilled,
            "PARTIALLY_FULFILLED" => Self::PartiallyFulfilled,
            "PARTIALLY_RETURNED" => Self::PartiallyReturned,
            "RETURNED" => Self::Returned,
            "FULFILLED" => Self::Fulfilled,
            "CANCELED" => Self::Canceled,
            "EXPIRED" => Self::Expired,
            other => Self::Other(other.chars().take(MAX_FIELD_LEN).collect()),
        }
    }

    /// The value as Saleor sends it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Draft => "DRAFT",
            Self::Unconfirmed => "UNCONFIRMED",
            Self::Unfulfilled => "UNFULFILLED",
            Self::PartiallyFulfilled => "PARTIALLY_FULFILLED",
            Self::PartiallyReturned => "PARTIALLY_RETURNED",
            Self::Returned => "RETURNED",
            Self::Fulfilled => "FULFILLED",
            Self::Canceled => "CANCELED",
            Self::Expired => "EXPIRED",
            Self::Other(value) => value,
        }
    }
}

/// An order's `chargeStatus` (`OrderChargeStatusEnum`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    /// Nothing charged.
    None,
    /// Part of the total charged.
    Partial,
    /// The total charged.
    Full,
    /// More than the total charged.
    Overcharged,
    /// A value this version does not know: never acted on.
    Other(String),
}

impl ChargeStatus {
    fn parse(value: &str) -> Self {
        match value {
            "NONE" => Self::None,
            "PARTIAL" => Self::Partial,
            "FULL" => Self::Full,
            "OVERCHARGED" => Self::Overcharged,
            other => Self::Other(other.chars().take(MAX_FIELD_LEN).collect()),
        }
    }

    /// The value as Saleor sends it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::None => "NONE",
            Self::Partial => "PARTIAL",
            Self::Full => "FULL",
            Self::Overcharged => "OVERCHARGED",
            Self::Other(value) => value,
        }
    }
}

/// One completed refund that names lines: a fulfillment with status
/// `REFUNDED` or `REFUNDED_AND_RETURNED` (Saleor's `orderFulfillmentRefundProducts`),
/// or a granted refund with status `SUCCESS` (the transactions API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The fulfillment's or granted refund's global id: the refund's idempotency key.
    pub id: String,
    /// The order lines it refunded, with how many units.
    pub lines: Vec<RefundedLine>,
}

/// An order line a refund names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundedLine {
    /// The order line's global id.
    pub line_id: String,
    /// How many of its units were refunded.
    pub quantity: i64,
}

/// A delivery's body: the event its signed `__typename` names, and the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The signed `__typename` of the event, when the subscription query selects it.
    pub typename: Option<String>,
    /// The order.
    pub order: Order,
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
    /// The order's `status`, when selected.
    pub status: Option<OrderStatus>,
    /// The order's `chargeStatus`, when selected.
    pub charge_status: Option<ChargeStatus>,
    /// The completed refunds that name lines, when the query selects `fulfillments` and `grantedRefunds`.
    pub refunds: Option<Vec<Refund>>,
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
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    charge_status: Option<String>,
    #[serde(default)]
    fulfillments: Option<Value>,
    #[serde(default)]
    granted_refunds: Option<Value>,
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

/// Reads a delivery to the `route` of an event from its raw body: the
/// signed `__typename` and the order.
pub fn parse_delivery(route: OrderEvent, body: &[u8]) -> Result<Delivery, PayloadError> {
    let mut envelope: Value = serde_json::from_slice(body).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    let missing = || PayloadError::MissingOrder(route.wrapper_key());
    let envelope = object(&mut envelope, "the body")?;
    let (typename, order) = match envelope.remove("order") {
        Some(order) => (envelope.remove("__typename"), order),
        None => {
            let mut data = envelope.remove("data").ok_or_else(missing)?;
            let mut wrapped = object(&mut data, "data")?.remove(route.wrapper_key()).ok_or_else(missing)?;
            let wrapped = object(&mut wrapped, route.wrapper_key())?;
            (wrapped.remove("__typename"), wrapped.remove("order").ok_or_else(missing)?)
        }
    };
    let typename = match typename {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            bounded("__typename", &name)?;
            Some(name)
        }
        Some(_) => return Err(PayloadError::Malformed("__typename must be a string".into())),
    };
    Ok(Delivery { typename, order: order_of(shaped(order)?)? })
}

/// Reads the order of a delivery to `route` from its raw body.
pub fn parse_order(route: OrderEvent, body: &[u8]) -> Result<Order, PayloadError> {
    parse_delivery(route, body).map(|d| d.order)
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
    let status = raw.status.as_deref().map(OrderStatus::parse);
    let charge_status = raw.charge_status.as_deref().map(ChargeStatus::parse);
    let refunds = match (raw.fulfillments, raw.granted_refunds) {
        (None | Some(Value::Null), None | Some(Value::Null)) => None,
        (fulfillments, granted) => {
            let mut refunds = refunds_of(fulfillments, "fulfillments", &["REFUNDED", "REFUNDED_AND_RETURNED"])?;
            refunds.extend(refunds_of(granted, "grantedRefunds", &["SUCCESS"])?);
            Some(refunds)
        }
    };
    Ok(Order { id, number, user_id, email, lines, status, charge_status, refunds })
}

/// The refunds of `field` (a list of fulfillments or granted refunds) whose
/// status is one of `done`, with the lines each names.
fn refunds_of(list: Option<Value>, field: &str, done: &[&str]) -> Result<Vec<Refund>, PayloadError> {
    let malformed = |what: String| PayloadError::Malformed(format!("order.{field}{what}"));
    let items = match list {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(malformed(" must be a list".into())),
    };
    if items.len() > MAX_LINES {
        return Err(PayloadError::Invalid(format!("order.{field} has {} entries; at most {MAX_LINES}", items.len())));
    }
    let mut refunds = Vec::new();
    for item in &items {
        let item = item.as_object().ok_or_else(|| malformed("[] must be objects".into()))?;
        let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty());
        if !text("status").is_some_and(|status| done.contains(&status)) {
            continue;
        }
        let id = text("id").ok_or_else(|| malformed("[] has a refund without an id".into()))?;
        bounded("refund id", id)?;
        let lines = match item.get("lines") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(lines)) => lines
                .iter()
                .map(|line| {
                    let line_id = line
                        .get("orderLine")
                        .and_then(|l| l.get("id"))
                        .and_then(Value::as_str)
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| malformed("[].lines[] must select orderLine { id }".into()))?;
                    bounded("refunded line id", line_id)?;
                    let quantity = line.get("quantity").and_then(Value::as_i64).unwrap_or(0);
                    if quantity < 1 {
                        return Err(malformed(format!("[].lines[] of line {line_id} has quantity {quantity}")));
                    }
                    Ok(RefundedLine { line_id: line_id.to_string(), quantity })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(malformed("[].lines must be a list".into())),
        };
        refunds.push(Refund { id: id.to_string(), lines });
    }
    Ok(refunds)
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
}
