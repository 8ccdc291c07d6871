//! An Instance's buyer configuration: `spec.config` parsed against the
//! settings its version declares ([`cmp_crds::inputs::parse_settings`]).
//! The gateway applies the valid settings on every run; this says, in
//! `ConfigApplied`, which keys are not applied and why. A bad key refuses
//! nothing: the agent runs without it. Pure.

use cmp_crds::conditions::{CONFIG_APPLIED, NewCondition, reasons};
use cmp_crds::{Instance, Offering};

/// `ConfigApplied`, when the Instance has a config or its version declares settings; `None` otherwise (and while
/// the Offering or the version is unknown, which other conditions report).
pub fn config_applied(
    instance: &Instance,
    offering: Option<&Offering>,
    version: &str,
) -> Option<NewCondition<'static>> {
    let version = offering?.version(version)?;
    if instance.spec.config.is_empty() && version.settings.is_empty() {
        return None;
    }
    let (applied, problems) = cmp_crds::inputs::parse_settings(&version.settings, &instance.spec.config);
    Some(if problems.is_empty() {
        let message =
            format!("{} of {} declared settings set; applied on every run", applied.len(), version.settings.len());
        NewCondition::new(CONFIG_APPLIED, true, reasons::CONFIG_APPLIED, message)
    } else {
        NewCondition::new(
            CONFIG_APPLIED,
            false,
            reasons::CONFIG_NOT_APPLIED,
            format!("spec.config: {}", problems.join("; ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::offering::RuntimeMode;

    #[test]
    fn config_applied_names_each_key_that_is_not_applied() {
        let mut version = crate::fixtures::version("1", false);
        version.settings = serde_json::from_value(serde_json::json!([
            {"name": "greeting", "type": "string", "choices": ["Hello", "Good evening"], "target": {"global": "GREETING"}},
        ]))
        .expect("settings");
        let offering = crate::fixtures::offering(RuntimeMode::Shared, vec![version]);
        let mut instance = crate::fixtures::instance("support");
        assert_eq!(config_applied(&instance, Some(&offering), "1").map(|c| c.status), Some("True"));
        instance.spec.config = [("greeting".to_string(), "Good evening".to_string())].into();
        let applied = config_applied(&instance, Some(&offering), "1").expect("a condition");
        assert_eq!((applied.status, applied.reason), ("True", "ConfigApplied"));
        instance.spec.config.insert("api_base".into(), "https://evil.example".into());
        instance.spec.config.insert("greeting".into(), "Yo".into());
        let refused = config_applied(&instance, Some(&offering), "1").expect("a condition");
        assert_eq!((refused.status, refused.reason), ("False", "ConfigNotApplied"));
        assert!(
            refused.message.contains("api_base is not a setting") && refused.message.contains("greeting"),
            "{}",
            refused.message
        );
        assert!(config_applied(&instance, None, "1").is_none(), "the Offering's absence is reported elsewhere");
        let plain = crate::fixtures::offering(RuntimeMode::Shared, vec![crate::fixtures::version("1", false)]);
        assert!(config_applied(&crate::fixtures::instance("support"), Some(&plain), "1").is_none());
    }
}
