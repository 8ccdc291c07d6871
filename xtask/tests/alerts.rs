//! The chart's alert rules (`charts/cmp/files/alerts.yaml`) and Grafana
//! dashboard (`charts/cmp/files/dashboard.json`):
//!
//! - `promtool check rules` accepts the rules, and `promtool test rules` runs
//!   their unit tests (`charts/cmp/ci/alerts-test.yaml`), which cover every alert;
//! - every alert has its runbook section in `docs/runbooks.md`;
//! - every expression of the rules and of the dashboard parses, and names
//!   only metrics that a live scrape of the three running components exports:
//!   no rule that can never fire, no panel that stays empty.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use cmp_testenv::control_plane::workspace_root;
use cmp_testenv::process::TestProcess;
use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;

const RUN_LABEL: &str = "cmp.gsv.dev/test-run";

fn chart_file(path: &str) -> PathBuf {
    workspace_root().join("charts/cmp").join(path)
}

/// Every rule of the rule file: (alert name, expression).
fn rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(chart_file("files/alerts.yaml")).expect("the rules");
    let file: Value = serde_yaml::from_str(&text).expect("YAML");
    let groups = file["groups"].as_array().expect("groups").clone();
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| (r["alert"].as_str().expect("an alert").to_string(), r["expr"].as_str().expect("an expr").to_string()))
        .collect()
}

/// Every query of the dashboard's panels: (panel title, expression).
fn panel_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(chart_file("files/dashboard.json")).expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels").clone();
    panels
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            targets.into_iter().map(move |t| (title.clone(), t["expr"].as_str().expect("an expr").to_string()))
        })
        .collect()
}

fn promtool(args: &[&str]) -> String {
    let binary = cmp_testenv::promtool::binary().expect("promtool");
    let output = Command::new(&binary).args(args).current_dir(workspace_root()).output().expect("promtool runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {} failed:\n{text}", args.join(" "));
    text
}

#[test]
fn promtool_accepts_the_rules_and_every_alert_has_unit_tests_and_a_runbook() {
    let checked = promtool(&["check", "rules", "charts/cmp/files/alerts.yaml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "charts/cmp/ci/alerts-test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    let tests = std::fs::read_to_string(chart_file("ci/alerts-test.yaml")).expect("the unit tests");
    let runbooks = std::fs::read_to_string(workspace_root().join("docs/runbooks.md")).expect("the runbooks");
    for (alert, _) in rules() {
        // A firing case (exp_alerts with labels) and a quiet one (exp_alerts: []) for each alert.
        let cases: Vec<&str> = tests.split("alertname: ").skip(1).filter(|c| c.starts_with(&*alert)).collect();
        assert!(cases.iter().any(|c| c.contains("exp_labels")), "{alert} has no unit test in which it fires");
        assert!(cases.iter().any(|c| c.contains("exp_alerts: []")), "{alert} has no unit test in which it stays quiet");
        let heading = format!("\n## {alert}\n");
        let section = runbooks.split(&heading).nth(1).unwrap_or_else(|| panic!("docs/runbooks.md has no ## {alert}"));
        let section = section.split("\n## ").next().unwrap_or_default();
        for part in ["**Symptom.**", "**Check.**", "**Fix.**"] {
            assert!(section.contains(part), "the runbook of {alert} lacks {part}");
        }
    }
}

/// The metric names an expression selects.
fn selected(expr: &str) -> Result<BTreeSet<String>, String> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = String;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
            let selector = match expr {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(selector) = selector {
                let name = selector.name.clone().ok_or_else(|| format!("a selector without a metric name: {expr}"))?;
                self.0.insert(name);
            }
            Ok(true)
        }
    }
    let parsed = promql_parser::parser::parse(expr)?;
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &parsed)?;
    Ok(names.0)
}

/// The sample names a `/metrics` text exports, with those of families that have no sample yet
/// (prometheus-client writes their `# TYPE` line: counters' samples end in `_total`, histograms'
/// in `_bucket`, `_sum` and `_count`).
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(typed) = line.strip_prefix("# TYPE ") {
            let mut parts = typed.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

async fn scrape(process: &mut TestProcess, what: &str) -> String {
    process.ready(std::time::Duration::from_secs(120)).await;
    let metrics = process.metrics().await;
    assert!(process.running(), "{what} stopped:\n{}", process.log());
    metrics.unwrap_or_else(|| panic!("{what} serves no /metrics:\n{}", process.log()))
}

fn binary(package: &str) -> PathBuf {
    cmp_testenv::workspace_binary(package, package).expect("the binary")
}

fn free_port() -> u16 {
    cmp_testenv::free_port().expect("a free port")
}

fn tmp(run: &str, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{run}-{name}"))
}

#[tokio::test]
async fn every_rule_and_panel_names_only_metrics_the_running_components_export() {
    let run = cmp_testenv::test::unique_name("alerts");
    let mut operator = cmp_testenv::process::operator_for_run(RUN_LABEL, &run).expect("cmp-operator starts");
    let gateway_args: Vec<String> = vec![
        "--addr".into(),
        format!("127.0.0.1:{}", free_port()),
        "--replica-name".into(),
        "a".into(),
        "--usage-file".into(),
        tmp(&run, "usage.jsonl").display().to_string(),
    ];
    let mut gateway =
        TestProcess::spawn(&binary("cmp-gateway"), &format!("{run}-gateway"), "info", &gateway_args).expect("starts");
    let cert_dir = tmp(&run, "certs");
    std::fs::create_dir_all(&cert_dir).expect("a certificate directory");
    let certs = cmp_testenv::certs::generate(&cert_dir).expect("certificates");
    let packs: &Path = &workspace_root().join("examples/saleor/credit-packs.yaml");
    let webhook_args: Vec<String> = vec![
        "--saleor-addr".into(),
        format!("127.0.0.1:{}", free_port()),
        "--credit-packs".into(),
        packs.display().to_string(),
        "--organization-label".into(),
        format!("{RUN_LABEL}={run}"),
        "--admission-addr".into(),
        format!("127.0.0.1:{}", free_port()),
        "--admission-cert".into(),
        certs.serving_cert.display().to_string(),
        "--admission-key".into(),
        certs.serving_key.display().to_string(),
    ];
    let mut webhook =
        TestProcess::spawn(&binary("cmp-webhook"), &format!("{run}-webhook"), "info", &webhook_args).expect("starts");

    let mut names = exported(&scrape(&mut operator, "cmp-operator").await);
    names.extend(exported(&scrape(&mut gateway, "cmp-gateway").await));
    let webhook_scrape = scrape(&mut webhook, "cmp-webhook").await;
    names.extend(exported(&webhook_scrape));
    // The admission certificate's expiry is a real time, not the 0 of an endpoint that is off.
    let expiry = webhook_scrape
        .lines()
        .find_map(|l| l.strip_prefix("cmp_webhook_admission_certificate_expiry_timestamp_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("the certificate's expiry");
    assert!(expiry > 1.7e9, "{expiry}");

    let mut problems = Vec::new();
    let expressions = rules().into_iter().map(|(a, e)| (format!("alert {a}"), e));
    for (what, expr) in expressions.chain(panel_queries().into_iter().map(|(t, e)| (format!("panel {t:?}"), e))) {
        match selected(&expr) {
            Err(error) => problems.push(format!("{what}: {expr:?} does not parse: {error}")),
            Ok(selected) if selected.is_empty() => problems.push(format!("{what}: {expr:?} selects no metric")),
            Ok(selected) => problems.extend(
                selected
                    .iter()
                    .filter(|n| !names.contains(*n))
                    .map(|n| format!("{what}: {n} is exported by none of the components")),
            ),
        }
    }
    assert!(problems.is_empty(), "{}\n\nexported: {names:?}", problems.join("\n"));
}

#[test]
fn a_misspelt_metric_or_a_broken_query_is_caught() {
    let names = exported(
        "# HELP cmp_gateway_runs Runs.\n# TYPE cmp_gateway_runs counter\n# TYPE cmp_x histogram\ncmp_gauge{a=\"b\"} 1\n",
    );
    let expected: BTreeSet<String> =
        ["cmp_gateway_runs_total", "cmp_x_bucket", "cmp_x_sum", "cmp_x_count", "cmp_gauge"].map(String::from).into();
    assert_eq!(names, expected);
    let selected_names = selected("sum(rate(cmp_gateway_runs_total[5m])) / max(cmp_gauge)").expect("parses");
    assert_eq!(selected_names, ["cmp_gateway_runs_total", "cmp_gauge"].map(String::from).into());
    assert!(selected("sum(rate(cmp_gateway_runs_total[5m])").is_err(), "an unclosed parenthesis");
}

#[test]
fn the_server_error_alert_counts_exactly_the_codes_answered_with_a_5xx() {
    let (_, expr) = rules().into_iter().find(|(a, _)| a == "CmpGatewayServerErrors").expect("the alert");
    let listed = expr.split("code=~\"").nth(1).and_then(|r| r.split('"').next()).expect("a code regex");
    let listed: BTreeSet<&str> = listed.split('|').collect();
    let five_hundreds: BTreeSet<&str> =
        cmp_crds::refusals::Code::ALL.iter().filter(|c| c.status() >= 500).map(|c| c.as_str()).collect();
    assert_eq!(listed, five_hundreds);
}
