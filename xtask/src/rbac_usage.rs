//! After the suite: every rule of the chart's RBAC was used (see
//! [`cmp_testenv::rbac_usage`]).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use cmp_operator::rbac::{ROLES, role};
use cmp_testenv::rbac_usage::{grants, read_uses, report, verbs_of};

/// Reads the suite's audit log, prints each granted verb with its use, and
/// says whether every one was used.
pub(crate) fn check(audit_dir: &Path) -> anyhow::Result<bool> {
    let values = cmp_testenv::helm::chart().join("ci/full-values.yaml");
    let values = values.to_string_lossy();
    let rendered = cmp_testenv::helm::template("cmp", "cmp-system", &["-f", values.as_ref()])?;
    anyhow::ensure!(rendered.success, "helm template with {values} failed: {}", rendered.stderr.trim());
    let grants = grants(&rendered.stdout)?;
    let uses = read_uses(audit_dir).with_context(|| format!("reading the audit log in {}", audit_dir.display()))?;
    let report = report(grants, &uses, &granted_to_people());
    eprintln!("\nThe chart's RBAC (ci/full-values.yaml) against what the suite's requests used:\n{report}");
    let unused = report.unused();
    if unused.is_empty() {
        eprintln!("every granted verb was used");
        return Ok(true);
    }
    eprintln!(
        "{} granted verb(s) were never used: remove them from charts/cmp/templates/<component>.yaml, \
         or add the test that makes the call. The audit log is in {}.",
        unused.len(),
        audit_dir.display()
    );
    Ok(false)
}

/// `(group, resource, verb)` that the operator's Roles give an Organization's
/// people in its control and runtime namespaces.
fn granted_to_people() -> BTreeSet<(String, String, String)> {
    ROLES
        .into_iter()
        .flat_map(|member| [None, Some("p")].map(|project| role(member, "n", "o", project)))
        .flat_map(|role| role.rules.unwrap_or_default())
        .flat_map(|rule| verbs_of(&rule))
        .collect()
}
