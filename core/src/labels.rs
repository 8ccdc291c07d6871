//! Labels given on the command line.

/// Parses `key=value` (a `--...-label` flag's value).
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("{text:?} is not key=value"))?;
    if key.is_empty() {
        return Err(format!("{text:?} has an empty key"));
    }
    Ok((key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_key_equals_value() {
        assert_eq!(parse_label("team=a=b"), Ok(("team".into(), "a=b".into())));
        assert_eq!(parse_label("team="), Ok(("team".into(), String::new())));
        assert!(parse_label("team").expect_err("no =").contains("not key=value"));
        assert!(parse_label("=a").expect_err("no key").contains("empty key"));
    }
}
