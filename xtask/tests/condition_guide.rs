//! `docs/conditions.md` explains every condition reason the platform sets:
//! add a reason to `cmp_crds::conditions::reasons` without a row there, and
//! this fails, naming it.

use cmp_testenv::workspace_root;

/// The reason strings declared in `pub mod reasons { ... }` of `crds/src/conditions.rs`.
fn declared_reasons(source: &str) -> Vec<String> {
    let start = source.find("pub mod reasons {").expect("crds/src/conditions.rs has `pub mod reasons`");
    let body = &source[start..];
    let end = body.find("\n}").expect("the reasons module closes");
    body[..end]
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub const "))
        .filter_map(|decl| decl.split('"').nth(1))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_condition_reason_has_a_row_in_the_guide() {
    let root = workspace_root();
    let source = std::fs::read_to_string(root.join("crds/src/conditions.rs")).expect("the conditions source");
    let reasons = declared_reasons(&source);
    assert!(reasons.len() >= 40 && reasons.contains(&"ConnectorOutsideTenant".to_string()), "{reasons:?}");
    let guide = std::fs::read_to_string(root.join("docs/conditions.md")).expect("docs/conditions.md");
    let missing: Vec<_> = reasons.iter().filter(|r| !guide.contains(&format!("| `{r}` |"))).collect();
    assert!(missing.is_empty(), "docs/conditions.md has no row for {missing:?}: say what each means and what to do");
}

#[test]
fn the_guides_waiting_reasons_are_the_ones_that_publish_no_event() {
    let guide = std::fs::read_to_string(workspace_root().join("docs/conditions.md")).expect("docs/conditions.md");
    let section = guide.split("## Waiting reasons").nth(1).expect("a Waiting reasons section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut listed: Vec<&str> =
        section.lines().filter_map(|line| line.strip_prefix("| `")?.split('`').next()).collect();
    listed.sort_unstable();
    let mut waiting = cmp_crds::conditions::WAITING_REASONS.to_vec();
    waiting.sort_unstable();
    assert_eq!(
        listed, waiting,
        "docs/conditions.md's waiting reasons and cmp_crds::conditions::WAITING_REASONS differ"
    );
}
