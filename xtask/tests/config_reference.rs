//! `docs/configuration.md` is exactly what the chart's schema and values and
//! the binaries' clap flags say today: change a flag or a value without
//! running `cargo xtask docs`, and this fails.

use cmp_testenv::docs::{BINARIES, REFERENCE, configuration_reference};
use cmp_testenv::{helm, workspace_binary, workspace_root};

#[test]
fn the_configuration_reference_is_what_the_schema_the_values_and_the_flags_say() {
    let binaries: Vec<(&str, std::path::PathBuf)> = BINARIES
        .iter()
        .map(|(package, binary)| (*binary, workspace_binary(package, binary).expect("the binary is built")))
        .collect();
    let generated = configuration_reference(&helm::chart(), &binaries).expect("the reference is generated");
    for (name, _) in &binaries {
        assert!(generated.contains(&format!("## `{name}`\n\n```text\n")), "{name}'s flags are listed");
    }
    assert!(generated.contains("| `operator.meterGuard` | boolean | `true` |"), "a value with its type and default");
    let path = workspace_root().join(REFERENCE);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let (line, (file, fresh)) = committed
            .lines()
            .chain(std::iter::repeat(""))
            .zip(generated.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .unwrap_or((generated.lines().count(), ("", "")));
        panic!(
            "{REFERENCE} is out of date: run `cargo xtask docs` and commit it. First difference, line {}:\n  file:      {file}\n  generated: {fresh}",
            line + 1
        );
    }
}
