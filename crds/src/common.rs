//! Types and schema helpers shared by several kinds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every CMP resource.
pub const GROUP: &str = "cmp.gsv.dev";
/// The API version served and stored.
pub const VERSION: &str = "v1alpha1";

/// What happens to the objects CMP created for a resource when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Remove what the operator created (namespaces included).
    #[default]
    Delete,
    /// Leave what the operator created in place; only the finalizer is removed.
    Retain,
}

/// Rule: a name that the operator turns into a namespace name must be a DNS label.
pub(crate) const DNS_LABEL_RULE: &str = "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')";

/// Schema for `status.conditions`: a list of `metav1.Condition` merged per `type`.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>();
    let object = schema.ensure_object();
    object.insert("x-kubernetes-list-type".into(), "map".into());
    object.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    object.insert(
        "description".into(),
        "The latest observations of the object's state, one per condition type (standard metav1.Condition).".into(),
    );
    schema
}

/// Serde helper: skip `false` booleans, so applied objects stay minimal.
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}

pub(crate) fn is_zero(value: &i64) -> bool {
    *value == 0
}
