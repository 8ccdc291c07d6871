//! `-o text|json|yaml`.

use serde::Serialize;

use crate::error::Error;

/// How data is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// JSON, for programs.
    Json,
    /// YAML, for programs.
    Yaml,
}

/// Prints `value` as JSON or YAML, or `text` for [`Format::Text`].
pub fn print<T: Serialize>(format: Format, value: &T, text: impl FnOnce(&T) -> String) -> Result<(), Error> {
    let rendered = match format {
        Format::Text => text(value),
        Format::Json => serde_json::to_string_pretty(value).map_err(|e| Error::Output(e.to_string()))?,
        Format::Yaml => serde_yaml::to_string(value).map_err(|e| Error::Output(e.to_string()))?,
    };
    println!("{}", rendered.trim_end());
    Ok(())
}
