//! The rules of a connector binding that the operator (in status) and the
//! gateway (at call time) both apply, so they can never disagree:
//!
//! - which tools a binding allows: the Instance's `allowedTools` within the
//!   Offering's bound for the binding's type ([`allowed_tools`]);
//! - which hosts a binding may point at: the platform's allow-list
//!   ([`HostPattern`]).
//!
//! Where a binding may *connect* (after DNS resolution, never to a
//! cluster-internal address) is checked by `cmp_core::egress`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::instance::ConnectorBinding;
use crate::offering::OfferingSpec;

/// The tools a binding allows, and those it lists beyond its Offering's bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolRule {
    /// The tools the agent may list and call.
    pub allowed: BTreeSet<String>,
    /// Tools the binding lists that its Offering does not allow for its type: never allowed.
    pub beyond_offering: Vec<String>,
}

impl ToolRule {
    /// Whether `tool` may be called.
    pub fn allows(&self, tool: &str) -> bool {
        self.allowed.contains(tool)
    }
}

/// The tools `binding` allows under `offering`: its `allowedTools` that the
/// Offering's connector of the same type lists. An Instance narrows, never
/// widens; an empty list, an unknown type or a missing Offering allow none.
pub fn allowed_tools(offering: Option<&OfferingSpec>, binding: &ConnectorBinding) -> ToolRule {
    let bound: BTreeSet<&str> = offering
        .and_then(|o| o.connectors.iter().find(|c| c.type_ == binding.type_))
        .map(|c| c.tools.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let mut rule = ToolRule::default();
    for tool in &binding.allowed_tools {
        if bound.contains(tool.as_str()) {
            rule.allowed.insert(tool.clone());
        } else if !rule.beyond_offering.contains(tool) {
            rule.beyond_offering.push(tool.clone());
        }
    }
    rule
}

/// What identifies a binding's MCP server and credential: a hash of its
/// type, url, vaultPath and credential presentation. A probe records it, so a
/// probe of an earlier binding is never read as one of the current binding.
pub fn fingerprint(binding: &ConnectorBinding) -> String {
    use sha2::Digest;
    let credential = binding.credential.as_ref();
    let parts = [
        binding.type_.as_str(),
        binding.url.as_deref().unwrap_or_default(),
        binding.vault_path.as_str(),
        credential.map_or("", |c| c.header.as_str()),
        credential.map_or("", |c| c.format.as_str()),
        credential.map_or("", |c| c.key.as_str()),
    ];
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part.len().to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// A host on the platform's allow-list of connector hosts: `tools.example.com`
/// (that host only) or `*.example.com` (any host below `example.com`, not
/// `example.com` itself). Hosts compare without case and without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    suffix: String,
    wildcard: bool,
}

/// A host pattern that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a connector host pattern: use a host name or address such as \"tools.example.com\" or \"10.0.0.5\", or \"*.example.com\" for every host below a domain"
)]
pub struct BadHostPattern(String);

impl FromStr for HostPattern {
    type Err = BadHostPattern;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadHostPattern(text.to_string());
        let normal = normalize(text);
        let (wildcard, rest) = match normal.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, normal.as_str()),
        };
        let label_ok = |l: &str| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let is_address = rest.parse::<std::net::IpAddr>().is_ok();
        if rest.is_empty() || (!is_address && !rest.split('.').all(label_ok)) || (wildcard && is_address) {
            return Err(bad());
        }
        Ok(Self { suffix: rest.to_string(), wildcard })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard { write!(f, "*.{}", self.suffix) } else { f.write_str(&self.suffix) }
    }
}

fn normalize(host: &str) -> String {
    host.trim().trim_end_matches('.').trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
}

impl HostPattern {
    /// Whether `host` (a URL's host) is one this pattern allows.
    pub fn matches(&self, host: &str) -> bool {
        let host = normalize(host);
        if self.wildcard {
            host.strip_suffix(&self.suffix).is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            host == self.suffix
        }
    }
}

/// Whether `binding`'s `vaultPath` lies inside `connectors/<organization>/<project>/`, the prefix of the
/// tenant whose Instance holds it. The operator refuses a binding outside it in status; the gateway, whose
/// role reads every tenant's secrets, refuses it again on every call, so a stale status never lends one
/// tenant another's credential.
pub fn inside_tenant(organization: &str, project: &str, binding: &ConnectorBinding) -> bool {
    binding.vault_path.starts_with(&crate::names::connector_prefix(organization, project))
}

/// The host of an http(s) URL (brackets kept for an IPv6 address), or `None` when it is not one.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') {
        return None;
    }
    let host = if authority.starts_with('[') {
        &authority[..=authority.find(']')?]
    } else {
        authority.rsplit_once(':').map_or(authority, |(host, _)| host)
    };
    (!host.is_empty()).then_some(host)
}

/// Where a binding's URL stands against the allow-list, before any DNS lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlCheck {
    /// The binding names no MCP server.
    NoUrl,
    /// The URL is not an http(s) URL with a host.
    Malformed,
    /// The host is not on the allow-list.
    NotAllowed(String),
    /// The host is allowed (its addresses are checked when it is called).
    Allowed,
}

/// Checks `binding`'s URL against `allowed`.
pub fn check_url(binding: &ConnectorBinding, allowed: &[HostPattern]) -> UrlCheck {
    let Some(url) = binding.url.as_deref() else { return UrlCheck::NoUrl };
    match url_host(url) {
        None => UrlCheck::Malformed,
        Some(host) if host_allowed(allowed, host) => UrlCheck::Allowed,
        Some(host) => UrlCheck::NotAllowed(host.to_string()),
    }
}

/// Whether any pattern of `allowed` allows `host`.
pub fn host_allowed(allowed: &[HostPattern], host: &str) -> bool {
    allowed.iter().any(|p| p.matches(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offering(connectors: serde_json::Value) -> OfferingSpec {
        serde_json::from_value(serde_json::json!({
            "displayName": "Support", "runtime": {"engine": "Langflow", "api": "v2", "mode": "Shared", "endpoint": "http://lfx"},
            "versions": [{"name": "1", "artifact": {"url": "file:///f.json", "sha256": "0".repeat(64)}, "flowId": "f"}],
            "plans": [{"id": "pro", "creditsPerRun": 1}],
            "connectors": connectors,
        }))
        .expect("an Offering")
    }

    fn binding(type_: &str, tools: &[&str]) -> ConnectorBinding {
        serde_json::from_value(serde_json::json!({
            "name": "desk", "type": type_, "vaultPath": "connectors/acme/support/desk", "allowedTools": tools,
        }))
        .expect("a binding")
    }

    #[test]
    fn a_bindings_fingerprint_follows_its_server_and_credential_not_its_tools() {
        let base = binding("tickets", &["get_ticket"]);
        let mut narrowed = base.clone();
        narrowed.allowed_tools.clear();
        narrowed.timeout_seconds = 5;
        assert_eq!(fingerprint(&base), fingerprint(&narrowed), "tools and timeout are not the server");
        assert_eq!(fingerprint(&base).len(), 32);
        let mut moved = base.clone();
        moved.url = Some("https://desk.example.com/mcp".into());
        let mut rekeyed = base.clone();
        rekeyed.vault_path = "connectors/acme/support/other".into();
        let mut typed = base.clone();
        typed.type_ = "crm".into();
        for changed in [moved, rekeyed, typed] {
            assert_ne!(fingerprint(&base), fingerprint(&changed));
        }
    }

    #[test]
    fn an_instance_narrows_the_offerings_tools_and_never_widens_them() {
        let o = offering(serde_json::json!([{"type": "tickets", "tools": ["create_ticket", "get_ticket"]}]));
        let rule = allowed_tools(Some(&o), &binding("tickets", &["get_ticket", "delete_everything"]));
        assert!(rule.allows("get_ticket"));
        assert!(!rule.allows("create_ticket"), "the Offering allows it, the Instance did not ask for it");
        assert!(!rule.allows("delete_everything"));
        assert_eq!(rule.beyond_offering, vec!["delete_everything".to_string()]);
    }

    #[test]
    fn an_empty_list_an_unknown_type_or_no_offering_allow_nothing() {
        let o = offering(serde_json::json!([{"type": "tickets", "tools": ["get_ticket"]}]));
        assert!(allowed_tools(Some(&o), &binding("tickets", &[])).allowed.is_empty());
        let other = allowed_tools(Some(&o), &binding("crm", &["get_ticket"]));
        assert!(other.allowed.is_empty());
        assert_eq!(other.beyond_offering, vec!["get_ticket".to_string()]);
        assert!(allowed_tools(None, &binding("tickets", &["get_ticket"])).allowed.is_empty());
    }

    #[test]
    fn a_binding_is_inside_its_own_projects_prefix_only() {
        let mut b = binding("tickets", &[]);
        assert!(inside_tenant("acme", "support", &b));
        assert!(!inside_tenant("acme", "support-2", &b), "a prefix, not a string prefix of the project");
        assert!(!inside_tenant("globex", "support", &b));
        b.vault_path = "connectors/acme/support-2/desk".into();
        assert!(!inside_tenant("acme", "support", &b));
    }

    #[test]
    fn a_urls_host_is_checked_against_the_allow_list() {
        let allowed: Vec<HostPattern> = vec!["*.example.com".parse().expect("a pattern"), "[::1]".parse().expect("v6")];
        let mut b = binding("tickets", &[]);
        assert_eq!(check_url(&b, &allowed), UrlCheck::NoUrl);
        for (url, expected) in [
            ("https://desk.example.com:8443/mcp", UrlCheck::Allowed),
            ("http://[::1]:9000/mcp", UrlCheck::Allowed),
            ("https://example.com/mcp", UrlCheck::NotAllowed("example.com".into())),
            ("https://desk.example.com@evil.net/", UrlCheck::Malformed),
            ("ftp://desk.example.com/", UrlCheck::Malformed),
        ] {
            b.url = Some(url.into());
            assert_eq!(check_url(&b, &allowed), expected, "{url}");
        }
    }

    #[test]
    fn host_patterns_match_a_host_or_the_hosts_below_a_domain() {
        let exact: HostPattern = "Tools.Example.com.".parse().expect("a pattern");
        assert!(exact.matches("tools.example.com"));
        assert!(!exact.matches("evil-tools.example.com"));
        assert!(!exact.matches("tools.example.com.evil.net"));
        let below: HostPattern = "*.example.com".parse().expect("a pattern");
        assert!(below.matches("a.example.com") && below.matches("a.b.EXAMPLE.com"));
        assert!(!below.matches("example.com"), "the domain itself is not below it");
        assert!(!below.matches("badexample.com"));
        let address: HostPattern = "127.0.0.1".parse().expect("an address");
        assert!(address.matches("127.0.0.1"));
        let v6: HostPattern = "[::1]".parse().expect("an address");
        assert!(v6.matches("[::1]"));
        for bad in ["", "*", "*.", "exa mple.com", "*.10.0.0.1", "a..b", "https://x"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?} is refused");
        }
        assert_eq!(below.to_string(), "*.example.com");
    }
}
