//! The chart's own identities for the binaries under test.
//!
//! [`ChartIdentity::apply`] renders `charts/cmp` with `helm template`, applies
//! what gives one component its rights (its ServiceAccount, ClusterRole, Roles
//! and bindings, the namespaces they live in, and the admission policies that
//! narrow them) and writes a kubeconfig that
//! authenticates with a token of that ServiceAccount (the TokenRequest API, as
//! a pod's projected token). A binary started with it has exactly the
//! rights the chart grants, so an integration test fails when a rule is
//! missing, and the audit log of `cargo xtask test` names it, so that the run
//! shows each rule in use ([`crate::rbac_usage`]). Each test run renders its own release (the run's name), so
//! concurrent tests never share or overwrite each other's rules.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_yaml::Value;

use crate::Error;

/// The namespace a component runs in unless a test says otherwise: the
/// binaries' default for their Leases and Secrets, and the chart's release
/// namespace in the README's install.
pub const DEFAULT_NAMESPACE: &str = "cmp-system";

/// The release every test's operator belongs to, so that all of them share
/// one ServiceAccount (`cmp-system:cmp-operator`), as the replicas of one
/// install do: each operator installs the cluster-wide tenancy-label policy
/// naming its own user as the one writer, and operators of different users
/// would keep replacing each other's. The gateway and the webhook take the
/// run's own release.
pub const OPERATOR_RELEASE: &str = "cmp";

/// The field manager of the applied RBAC.
const MANAGER: &str = "cmp-tests-chart-rbac";

/// The kinds that make up a component's identity, its rights, and the
/// admission policies that narrow them (the operator's meter guard).
const IDENTITY_KINDS: [&str; 7] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// The chart's three components.
pub const COMPONENTS: [Component; 3] = [Component::Operator, Component::Gateway, Component::Webhook];

/// One of the chart's three components.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// `cmp-operator`.
    Operator,
    /// `cmp-gateway`.
    Gateway,
    /// `cmp-webhook`.
    Webhook,
}

impl Component {
    /// Its name in the chart (the `app.kubernetes.io/component` label).
    pub fn name(self) -> &'static str {
        match self {
            Component::Operator => "operator",
            Component::Gateway => "gateway",
            Component::Webhook => "webhook",
        }
    }
}

/// A component's ServiceAccount, as the chart creates it, with a token.
#[derive(Clone, Debug)]
pub struct ChartIdentity {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub user: String,
    /// A kubeconfig for the test control plane that acts as [`ChartIdentity::user`].
    pub kubeconfig: PathBuf,
}

impl ChartIdentity {
    /// The identity the chart gives `component` when it runs with `args`:
    /// release `release` in the namespace the flags name (`--lease-namespace`
    /// for the operator, `--namespace` for the others; else
    /// [`DEFAULT_NAMESPACE`]), with the values those flags come from in the
    /// chart, and `values` added; applied as `admin` (a kubeconfig of the
    /// control plane's administrator).
    pub fn for_flags(
        admin: &Path,
        component: Component,
        release: &str,
        args: &[String],
        values: &[String],
    ) -> Result<Self, Error> {
        let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        let namespace_flag = if component == Component::Operator { "--lease-namespace" } else { "--namespace" };
        let namespace = flag(namespace_flag).unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let mut all: Vec<String> = Vec::new();
        if component == Component::Operator {
            if let Some(ns) = flag("--argocd-namespace") {
                all.push(format!("operator.argocd.namespace={ns}"));
            }
            if let Some(on) = flag("--admission-policy") {
                all.push(format!("operator.admissionPolicy={on}"));
            }
            if let Some(secret) = flag("--gitops-credentials-secret") {
                all.push(format!("operator.gitops.credentialsSecret={secret}"));
            }
        }
        if component == Component::Gateway {
            let on = |name: &str| args.iter().any(|a| a == name);
            if on("--signup") {
                all.push("gateway.signup.enabled=true".into());
            }
            if on("--buyer-api") {
                all.push("gateway.buyerApi.enabled=true".into());
            }
            if let Some(issuer) = flag("--oidc-issuer").filter(|_| on("--signup") || on("--buyer-api")) {
                all.push(format!("gateway.oidc.issuer={}", issuer.replace(',', "\\,")));
            }
        }
        if component == Component::Webhook {
            let urls = args.iter().zip(args.iter().skip(1)).filter(|(flag, _)| *flag == "--saleor-api-url");
            for (i, (_, url)) in urls.enumerate() {
                all.push(format!("webhook.saleorApiUrls[{i}]={}", url.replace(',', "\\,")));
            }
        }
        all.extend(values.iter().cloned());
        Self::apply(admin, component, release, &namespace, &all)
    }

    /// Renders the chart as `release` in `namespace` with `values` (`--set`
    /// expressions), applies `component`'s ServiceAccount and RBAC as `admin`
    /// (a kubeconfig of the control plane's administrator), and returns its
    /// identity, whose kubeconfig reaches the same server.
    pub fn apply(
        admin: &Path,
        component: Component,
        release: &str,
        namespace: &str,
        values: &[String],
    ) -> Result<Self, Error> {
        let mut args: Vec<&str> = Vec::new();
        for value in values {
            args.extend(["--set", value.as_str()]);
        }
        let rendered = crate::helm::template(release, namespace, &args)?;
        if !rendered.success {
            return Err(Error::Process(format!(
                "helm template {release} (values {values:?}) failed: {}",
                rendered.stderr.trim()
            )));
        }
        let (objects, account) = rights_of(component, &rendered.stdout)?;
        kubectl_apply(admin, &objects)?;
        let user = format!("system:serviceaccount:{namespace}:{account}");
        // One file per identity made: the operators of concurrent tests share a release, and a
        // binary reading a kubeconfig that another test is rewriting sees no current context.
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nth = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kubeconfig = std::env::temp_dir().join(format!(
            "{release}-{}-{}-{nth}-kubeconfig",
            component.name(),
            std::process::id()
        ));
        let token = service_account_token(admin, namespace, &account)?;
        crate::test::kubeconfig_with_token(admin, &token, &kubeconfig)?;
        Ok(Self { user, kubeconfig })
    }
}

/// Applies the chart's cluster-wide admission policies of `component_label`
/// (an `app.kubernetes.io/component` that is not a binary's, such as
/// `store-suspension`) as release `cmp` in [`DEFAULT_NAMESPACE`], the release
/// whose namespace the tests' webhooks run in, as `admin`. A policy is
/// cluster-wide, so it is applied once under one name, never per test release.
pub fn apply_policies(admin: &Path, component_label: &str) -> Result<(), Error> {
    let rendered = crate::helm::template(OPERATOR_RELEASE, DEFAULT_NAMESPACE, &[])?;
    if !rendered.success {
        return Err(Error::Process(format!("helm template failed: {}", rendered.stderr.trim())));
    }
    let policies: Vec<Value> = documents(&rendered.stdout)?
        .into_iter()
        .filter(|o| o["metadata"]["labels"]["app.kubernetes.io/component"].as_str() == Some(component_label))
        .filter(|o| o["kind"].as_str().is_some_and(|k| k.starts_with("ValidatingAdmissionPolicy")))
        .collect();
    if policies.is_empty() {
        return Err(Error::Process(format!("the chart renders no admission policy of component {component_label}")));
    }
    kubectl_apply(admin, &policies)
}

/// The objects of a `helm template` output, in order.
pub fn documents(rendered: &str) -> Result<Vec<Value>, Error> {
    serde_yaml::Deserializer::from_str(rendered)
        .map(|document| {
            Value::deserialize(document)
                .map_err(|e| Error::Process(format!("the chart rendered YAML that does not parse: {e}")))
        })
        .filter(|object| !matches!(object, Ok(Value::Null)))
        .collect()
}

/// The component an object of the chart belongs to (its `app.kubernetes.io/component` label).
pub fn component_of(object: &Value) -> Option<Component> {
    let label = object["metadata"]["labels"]["app.kubernetes.io/component"].as_str()?;
    COMPONENTS.into_iter().find(|c| c.name() == label)
}

/// The objects of `component` that make up its rights, preceded by the
/// namespaces they live in, and its ServiceAccount's name.
fn rights_of(component: Component, rendered: &str) -> Result<(Vec<Value>, String), Error> {
    let mut namespaces: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    let mut account = None;
    for object in documents(rendered)? {
        let kind = object["kind"].as_str().unwrap_or_default();
        if !IDENTITY_KINDS.contains(&kind) || component_of(&object) != Some(component) {
            continue;
        }
        if kind == "ServiceAccount" {
            account = object["metadata"]["name"].as_str().map(String::from);
        }
        if let Some(namespace) = object["metadata"]["namespace"].as_str()
            && !namespaces.iter().any(|n| n == namespace)
        {
            namespaces.push(namespace.to_string());
        }
        objects.push(object);
    }
    let account = account
        .ok_or_else(|| Error::Process(format!("the chart renders no ServiceAccount for the {}", component.name())))?;
    let mut all: Vec<Value> = namespaces
        .into_iter()
        .map(|name| {
            let mut metadata = serde_yaml::Mapping::new();
            metadata.insert("name".into(), name.into());
            let mut namespace = serde_yaml::Mapping::new();
            namespace.insert("apiVersion".into(), "v1".into());
            namespace.insert("kind".into(), "Namespace".into());
            namespace.insert("metadata".into(), metadata.into());
            Value::Mapping(namespace)
        })
        .collect();
    all.extend(objects);
    Ok((all, account))
}

/// How long an identity's token lasts: longer than any test run, and than
/// most `cargo xtask up` sessions (a pod's projected token is renewed; this
/// one is not: restart `up` after a month).
const TOKEN_DURATION: &str = "720h";

/// A token of ServiceAccount `namespace/account` (`kubectl create token`, the
/// TokenRequest API), as `admin`.
fn service_account_token(admin: &Path, namespace: &str, account: &str) -> Result<String, Error> {
    let kubectl = crate::binaries()?.join("kubectl");
    let output = Command::new(&kubectl)
        .args(["create", "token", account, "--namespace", namespace, "--duration", TOKEN_DURATION])
        .env("KUBECONFIG", admin)
        .output()
        .map_err(|source| Error::Spawn { binary: kubectl.display().to_string(), source })?;
    let token = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if output.status.success() && !token.is_empty() {
        Ok(token)
    } else {
        Err(Error::Process(format!(
            "kubectl create token {account} -n {namespace} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// `kubectl apply --server-side` of `objects` as `admin`.
fn kubectl_apply(admin: &Path, objects: &[Value]) -> Result<(), Error> {
    let mut stream = String::new();
    for object in objects {
        let text = serde_yaml::to_string(object).map_err(|e| Error::Process(format!("writing YAML: {e}")))?;
        stream.push_str("---\n");
        stream.push_str(&text);
    }
    let kubectl = crate::binaries()?.join("kubectl");
    let mut child = Command::new(&kubectl)
        .args(["apply", "--server-side", "--force-conflicts", "--field-manager", MANAGER, "-f", "-"])
        .env("KUBECONFIG", admin)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn { binary: kubectl.display().to_string(), source })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(stream.as_bytes())
            .map_err(|source| Error::Io { path: PathBuf::from("kubectl stdin"), source })?;
    }
    let output = child.wait_with_output().map_err(|source| Error::Spawn { binary: "kubectl".into(), source })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Process(format!(
            "kubectl apply of the chart's RBAC failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: r-cmp-gateway, namespace: ns, labels: {app.kubernetes.io/component: gateway}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: r-cmp-gateway-runtime-key-k, namespace: default, labels: {app.kubernetes.io/component: gateway}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: r-cmp-gateway, namespace: ns, labels: {app.kubernetes.io/component: gateway}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: r-cmp-operator, labels: {app.kubernetes.io/component: operator}}
"#;

    #[test]
    fn a_components_rights_are_its_rbac_objects_after_their_namespaces() {
        let (objects, account) = rights_of(Component::Gateway, RENDERED).expect("parses");
        assert_eq!(account, "r-cmp-gateway");
        let kinds: Vec<(&str, &str)> = objects
            .iter()
            .map(|o| (o["kind"].as_str().unwrap_or_default(), o["metadata"]["name"].as_str().unwrap_or_default()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("Namespace", "ns"),
                ("Namespace", "default"),
                ("ServiceAccount", "r-cmp-gateway"),
                ("Role", "r-cmp-gateway-runtime-key-k")
            ]
        );
    }

    #[test]
    fn a_component_without_a_service_account_is_an_error() {
        let error = rights_of(Component::Webhook, RENDERED).expect_err("no webhook account");
        assert!(error.to_string().contains("no ServiceAccount for the webhook"), "{error}");
    }
}
