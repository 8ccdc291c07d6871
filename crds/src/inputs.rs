//! The rules of a run's caller inputs, which the gateway applies and the
//! Instance's MCP tool advertises: a caller may send only the inputs its
//! Offering version declares (`spec.versions[].inputs`), each within its
//! type and bounds; the gateway, not the caller, decides where each goes in
//! the flow. Anything else is refused, so a caller can never reach a field
//! the seller did not open (a model's API base, the prompt, a collection, an
//! MCP server's configuration).

use serde_json::{Map, Value, json};

use crate::offering::{CallerInput, InputType};

/// A string input's most characters when its declaration sets none.
pub const DEFAULT_MAX_LENGTH: u32 = 1000;

/// Why a caller's inputs were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputRefusal {
    /// The caller sent an input its Offering version does not declare.
    #[error(
        "the input {name:?} is not one this agent takes{}; send only those, in \"inputs\"",
        declared_list(.declared)
    )]
    NotDeclared {
        /// What the caller sent.
        name: String,
        /// What the version declares.
        declared: Vec<String>,
    },
    /// A declared input with a value outside its type or bounds.
    #[error("the input {name:?} {why}")]
    Invalid {
        /// The input.
        name: String,
        /// What is wrong with its value.
        why: String,
    },
}

fn declared_list(declared: &[String]) -> String {
    if declared.is_empty() {
        " (it takes none beyond the input text and the session id)".into()
    } else {
        format!(" (it takes {})", declared.join(", "))
    }
}

/// The caller's `sent` inputs, checked against `declared`: each declaration with the value it is given.
pub fn check<'d>(
    declared: &'d [CallerInput],
    sent: &Map<String, Value>,
) -> Result<Vec<(&'d CallerInput, Value)>, InputRefusal> {
    let mut checked = Vec::with_capacity(sent.len());
    for (name, value) in sent {
        let Some(input) = declared.iter().find(|d| &d.name == name) else {
            return Err(InputRefusal::NotDeclared {
                name: name.clone(),
                declared: declared.iter().map(|d| d.name.clone()).collect(),
            });
        };
        let invalid = |why: String| InputRefusal::Invalid { name: name.clone(), why };
        let value = match input.type_ {
            InputType::String => {
                let text = value.as_str().ok_or_else(|| invalid("must be a string".into()))?;
                let max = input.max_length.unwrap_or(DEFAULT_MAX_LENGTH) as usize;
                if text.chars().count() > max {
                    return Err(invalid(format!("is longer than {max} characters")));
                }
                if input.target.global.is_some() && text.chars().any(char::is_control) {
                    return Err(invalid("must not hold line breaks or control characters".into()));
                }
                if !input.choices.is_empty() && !input.choices.iter().any(|c| c == text) {
                    return Err(invalid(format!("must be one of {}", input.choices.join(", "))));
                }
                value.clone()
            }
            InputType::Boolean => {
                value.as_bool().ok_or_else(|| invalid("must be true or false".into()))?;
                value.clone()
            }
            InputType::Integer | InputType::Number => {
                let number = match input.type_ {
                    InputType::Integer => {
                        value.as_i64().map(|n| n as f64).ok_or_else(|| invalid("must be a whole number".into()))?
                    }
                    _ => value.as_f64().ok_or_else(|| invalid("must be a number".into()))?,
                };
                if input.minimum.is_some_and(|min| number < min as f64)
                    || input.maximum.is_some_and(|max| number > max as f64)
                {
                    let bound = |b: Option<i64>| b.map_or_else(|| "any".to_string(), |b| b.to_string());
                    return Err(invalid(format!(
                        "must lie between {} and {}",
                        bound(input.minimum),
                        bound(input.maximum)
                    )));
                }
                value.clone()
            }
        };
        checked.push((input, value));
    }
    Ok(checked)
}

/// A buyer's `Instance.spec.config` against the version's declared `settings`: each setting with its value (parsed
/// from the config's string by the setting's type, and checked as an input is), and what is wrong with the rest.
pub fn parse_settings<'d>(
    declared: &'d [CallerInput],
    config: &std::collections::BTreeMap<String, String>,
) -> (Vec<(&'d CallerInput, Value)>, Vec<String>) {
    let (mut settings, mut problems) = (Vec::new(), Vec::new());
    for (key, text) in config {
        let Some(setting) = declared.iter().find(|d| &d.name == key) else {
            let takes: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            let takes = if takes.is_empty() { "none".to_string() } else { takes.join(", ") };
            problems.push(format!("{key} is not a setting of this version (it takes {takes}); it is not applied"));
            continue;
        };
        let parsed = match setting.type_ {
            InputType::String => Some(Value::String(text.clone())),
            InputType::Integer => text.trim().parse::<i64>().ok().map(Value::from),
            InputType::Number => {
                text.trim().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number)
            }
            InputType::Boolean => match text.trim() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
        };
        let Some(value) = parsed else {
            let wanted = match setting.type_ {
                InputType::String => "a string",
                InputType::Integer => "a whole number",
                InputType::Number => "a number",
                InputType::Boolean => "true or false",
            };
            problems.push(format!("{key} = {text:?} is not {wanted}; it is not applied"));
            continue;
        };
        let one = Map::from_iter([(key.clone(), value)]);
        match check(std::slice::from_ref(setting), &one) {
            Ok(mut checked) => settings.append(&mut checked),
            Err(refusal) => problems.push(format!("{refusal}; it is not applied").replace("the input", "the setting")),
        }
    }
    (settings, problems)
}

/// Where a declared input or setting goes in a run: a component's field in `tweaks`, or a request global (as text)
/// in `globals`. The gateway places a run's inputs and settings with it; a Dedicated render its settings.
pub fn place(declared: &CallerInput, value: Value, tweaks: &mut Map<String, Value>, globals: &mut Map<String, Value>) {
    let target = &declared.target;
    match (&target.component, &target.field, &target.global) {
        (Some(component), Some(field), _) => {
            let fields = tweaks.entry(component.clone()).or_insert_with(|| Value::Object(Map::new()));
            if let Some(fields) = fields.as_object_mut() {
                fields.insert(field.clone(), value);
            }
        }
        (_, _, Some(global)) => {
            let text = value.as_str().map_or_else(|| value.to_string(), String::from);
            globals.insert(global.clone(), Value::String(text));
        }
        // The CRD admits only one of the two shapes.
        _ => {}
    }
}

/// Whether the flow `flow` (Langflow/lfx flow JSON) has what each of `declared` names: the node and its field for a
/// component target; for a global, a field that loads it (`load_from_db` with the global's name as value) or a text
/// that refers to it (`{{NAME}}`). The error names the input and what is missing.
pub fn check_flow(declared: &[CallerInput], flow: &[u8]) -> Result<(), String> {
    if declared.is_empty() {
        return Ok(());
    }
    let flow: Value = serde_json::from_slice(flow).map_err(|e| format!("the flow is not JSON: {e}"))?;
    let nodes = flow.pointer("/data/nodes").or_else(|| flow.get("nodes")).and_then(Value::as_array);
    let nodes = nodes.ok_or("the flow has no nodes (data.nodes)")?;
    let template = |node: &Value| node.pointer("/data/node/template").and_then(Value::as_object).cloned();
    for input in declared {
        let target = &input.target;
        match (&target.component, &target.field, &target.global) {
            (Some(component), Some(field), _) => {
                let node = nodes.iter().find(|n| n["id"] == component.as_str()).ok_or_else(|| {
                    format!("input {:?} names component {component:?}, which the flow does not have", input.name)
                })?;
                if !template(node).is_some_and(|t| t.contains_key(field)) {
                    return Err(format!(
                        "input {:?} names field {field:?} of component {component:?}, which it does not have",
                        input.name
                    ));
                }
            }
            (_, _, Some(global)) => {
                let reference = format!("{{{{{global}}}}}");
                let used = nodes.iter().filter_map(template).flat_map(|t| t.into_iter()).any(|(_, field)| {
                    let loads = field["load_from_db"] == true && field["value"] == global.as_str();
                    loads || field.to_string().contains(&reference)
                });
                if !used {
                    return Err(format!(
                        "input {:?} goes to the global {global}, which no field of the flow loads (load_from_db) or refers to ({reference})",
                        input.name
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The JSON Schema properties of the declared inputs, as the Instance's MCP tool advertises them.
pub fn schema_properties(declared: &[CallerInput]) -> Map<String, Value> {
    declared
        .iter()
        .map(|input| {
            let mut schema = match input.type_ {
                InputType::String => {
                    let mut s = json!({"type": "string", "maxLength": input.max_length.unwrap_or(DEFAULT_MAX_LENGTH)});
                    if !input.choices.is_empty() {
                        s["enum"] = json!(input.choices);
                    }
                    s
                }
                InputType::Boolean => json!({"type": "boolean"}),
                InputType::Integer | InputType::Number => {
                    let mut s = json!({"type": if input.type_ == InputType::Integer { "integer" } else { "number" }});
                    if let Some(min) = input.minimum {
                        s["minimum"] = json!(min);
                    }
                    if let Some(max) = input.maximum {
                        s["maximum"] = json!(max);
                    }
                    s
                }
            };
            if !input.description.is_empty() {
                schema["description"] = json!(input.description);
            }
            (input.name.clone(), schema)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<CallerInput> {
        serde_json::from_value(json!([
            {"name": "tone", "type": "string", "choices": ["formal", "casual"], "target": {"global": "TONE"}},
            {"name": "limit", "type": "integer", "minimum": 1, "maximum": 5, "target": {"component": "Search-1", "field": "top_k"}},
            {"name": "note", "type": "string", "maxLength": 5, "target": {"global": "NOTE"}},
            {"name": "strict", "type": "boolean", "target": {"global": "STRICT"}},
        ]))
        .expect("declarations")
    }

    fn sent(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("an object")
    }

    #[test]
    fn declared_inputs_within_their_bounds_pass_and_go_where_declared() {
        let declared = declared();
        let checked = check(&declared, &sent(json!({"tone": "casual", "limit": 3, "strict": true}))).expect("allowed");
        let targets: Vec<(&str, Value)> = checked.iter().map(|(d, v)| (d.name.as_str(), v.clone())).collect();
        assert_eq!(targets.len(), 3);
        assert!(targets.contains(&("limit", json!(3))));
        assert!(check(&declared, &Map::new()).expect("nothing sent").is_empty());
    }

    #[test]
    fn anything_undeclared_or_out_of_bounds_is_refused_naming_it() {
        let declared = declared();
        let refused = |value: Value| check(&declared, &sent(value)).expect_err("refused");
        // What a caller would use to reach the seller's key, the prompt or another tenant's data.
        for name in ["OpenAIModel-1", "api_base", "collection_name", "mcp_server", "system_prompt"] {
            let refusal = refused(json!({name: "x"}));
            assert!(matches!(&refusal, InputRefusal::NotDeclared { name: n, .. } if n == name), "{refusal}");
            assert!(refusal.to_string().contains("tone, limit, note, strict"), "names what it takes: {refusal}");
        }
        let none = check(&[], &sent(json!({"tone": "formal"}))).expect_err("nothing declared");
        assert!(none.to_string().contains("takes none beyond the input text"), "{none}");
        for (value, why) in [
            (json!({"tone": "angry"}), "must be one of formal, casual"),
            (json!({"tone": 3}), "must be a string"),
            (json!({"limit": 9}), "between 1 and 5"),
            (json!({"limit": 2.5}), "whole number"),
            (json!({"note": "toolong"}), "longer than 5"),
            (json!({"note": "a\nb"}), "line breaks"),
            (json!({"strict": "yes"}), "true or false"),
        ] {
            let refusal = refused(value.clone());
            assert!(refusal.to_string().contains(why), "{value}: {refusal}");
        }
    }

    #[test]
    fn a_buyers_config_is_parsed_by_the_settings_types_and_the_rest_reported() {
        let declared = declared();
        let config: std::collections::BTreeMap<String, String> = [
            ("tone", "formal"),
            ("limit", "4"),
            ("strict", "true"),
            ("note", "far too long"),
            ("colour", "blue"),
            ("api_base", "https://evil.example"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (settings, problems) = parse_settings(&declared, &config);
        let applied: Vec<(&str, Value)> = settings.iter().map(|(d, v)| (d.name.as_str(), v.clone())).collect();
        assert_eq!(applied, vec![("limit", json!(4)), ("strict", json!(true)), ("tone", json!("formal"))]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("api_base is not a setting")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("colour is not a setting")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("\"note\" is longer than 5")), "{problems:?}");
        let (_, bad) = parse_settings(&declared, &[("limit".to_string(), "four".to_string())].into());
        assert_eq!(bad, vec!["limit = \"four\" is not a whole number; it is not applied".to_string()]);
    }

    #[test]
    fn a_declaration_must_name_what_the_flow_has() {
        let flow = json!({"data": {"nodes": [
            {"id": "Search-1", "data": {"node": {"template": {"top_k": {"value": 3}}}}},
            {"id": "Prompt-1", "data": {"node": {"template": {
                "greeting": {"load_from_db": true, "value": "GREETING"},
                "headers": {"value": {"Authorization": "Bearer {{TOKEN}}"}}}}}},
        ]}});
        let flow = serde_json::to_vec(&flow).expect("JSON");
        let declare = |target: Value| -> Vec<CallerInput> {
            serde_json::from_value(json!([{"name": "x", "type": "string", "target": target}])).expect("a declaration")
        };
        for target in [
            json!({"component": "Search-1", "field": "top_k"}),
            json!({"global": "GREETING"}),
            json!({"global": "TOKEN"}),
        ] {
            assert_eq!(check_flow(&declare(target.clone()), &flow), Ok(()), "{target}");
        }
        for (target, why) in [
            (json!({"component": "Model-1", "field": "api_base"}), "component \"Model-1\""),
            (json!({"component": "Search-1", "field": "collection"}), "field \"collection\""),
            (json!({"global": "TONE"}), "the global TONE"),
        ] {
            let error = check_flow(&declare(target.clone()), &flow).expect_err("refused");
            assert!(error.contains(why) && error.contains("input \"x\""), "{target}: {error}");
        }
        assert!(check_flow(&declare(json!({"global": "G"})), b"not json").is_err());
        assert_eq!(check_flow(&[], b"not json"), Ok(()), "nothing declared, nothing to check");
    }

    #[test]
    fn the_tool_schema_carries_each_input_with_its_bounds() {
        let properties = schema_properties(&declared());
        assert_eq!(properties["tone"]["enum"], json!(["formal", "casual"]));
        assert_eq!(
            (properties["limit"]["minimum"].as_i64(), properties["limit"]["maximum"].as_i64()),
            (Some(1), Some(5))
        );
        assert_eq!(properties["note"]["maxLength"], 5);
        assert_eq!(properties["strict"]["type"], "boolean");
    }
}
