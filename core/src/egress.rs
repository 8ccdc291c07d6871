//! Where a connector binding may connect. Buyers write Instances, and an
//! Instance names its binding's URL, so this is what keeps the gateway from
//! being an open proxy into the cluster:
//!
//! 1. the URL is `http` or `https`, with no user info;
//! 2. its host is on the platform's allow-list ([`HostPattern`]);
//! 3. after DNS resolution, **no** address it resolves to is in a denied
//!    network (by default loopback, link-local, private and shared ranges)
//!    or is a denied endpoint (the API server, OpenBao, the runtimes, the
//!    gateway itself: an exact address and port);
//! 4. the call connects only to the addresses that were checked: the client
//!    is pinned to them ([`Egress::client`]), so a second, different DNS
//!    answer cannot slip in between check and connect, and redirects are
//!    not followed.
//!
//! The operator applies 1-3 to report a binding in status; the gateway
//! applies all four on every call.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use cmp_crds::connectors::{HostPattern, host_allowed};
use ipnet::IpNet;

/// How long a checked resolution (and its pinned client) is reused.
const PINNED_FOR: Duration = Duration::from_secs(30);

/// The networks denied when none are configured.
pub const DEFAULT_DENIED_NETWORKS: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "fc00::/7",
    "fe80::/10",
];

/// Why a binding may not be called.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EgressRefusal {
    /// The URL does not parse, or is not plain http(s).
    #[error("the binding's URL {url:?} is not usable: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The host is not on the allow-list.
    #[error(
        "the binding's host {host} is not on the platform's allow-list of connector hosts ({allowed}); ask the platform operator to add it (chart value connectors.allowedHosts)"
    )]
    HostNotAllowed {
        /// The host.
        host: String,
        /// The allow-list, as configured.
        allowed: String,
    },
    /// The host does not resolve.
    #[error("the binding's host {host} does not resolve: {why}")]
    Unresolvable {
        /// The host.
        host: String,
        /// The resolver's error.
        why: String,
    },
    /// The host resolves to a denied address.
    #[error("the binding's host {host} resolves to {address}, {why}: a connector may not reach it")]
    Internal {
        /// The host.
        host: String,
        /// The denied address.
        address: SocketAddr,
        /// Which rule denies it.
        why: String,
    },
}

/// The allow-list, the denied networks and endpoints, and the pinned clients.
pub struct Egress {
    allowed: Vec<HostPattern>,
    denied_networks: Vec<IpNet>,
    denied_endpoints: Vec<String>,
    pinned: Mutex<HashMap<(String, u16), Pinned>>,
}

struct Pinned {
    at: Instant,
    client: reqwest::Client,
}

/// A URL that passed the allow-list: its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The URL.
    pub url: reqwest::Url,
    /// Its host.
    pub host: String,
    /// Its port (the scheme's when unset).
    pub port: u16,
}

impl Egress {
    /// Allows the hosts of `allowed`; denies `denied_networks` and the
    /// endpoints (URLs or `host:port`) of `denied_endpoints`.
    pub fn new(allowed: Vec<HostPattern>, denied_networks: Vec<IpNet>, denied_endpoints: Vec<String>) -> Self {
        Self { allowed, denied_networks, denied_endpoints, pinned: Mutex::default() }
    }

    /// The default denied networks.
    pub fn default_denied_networks() -> Vec<IpNet> {
        DEFAULT_DENIED_NETWORKS.iter().filter_map(|n| n.parse().ok()).collect()
    }

    /// Steps 1 and 2: the URL's parts, if it is http(s) and its host is allowed.
    pub fn destination(&self, url: &str) -> Result<Destination, EgressRefusal> {
        let bad = |why: &str| EgressRefusal::BadUrl { url: url.to_string(), why: why.to_string() };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("only http and https are allowed"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad("user info is not allowed; the credential comes from the binding's vaultPath"));
        }
        let host = parsed.host_str().ok_or_else(|| bad("it has no host"))?.to_string();
        let port = parsed.port_or_known_default().ok_or_else(|| bad("it has no port"))?;
        if !host_allowed(&self.allowed, &host) {
            let allowed = if self.allowed.is_empty() {
                "empty: no connector may be called".to_string()
            } else {
                self.allowed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            };
            return Err(EgressRefusal::HostNotAllowed { host, allowed });
        }
        Ok(Destination { url: parsed, host, port })
    }

    /// Step 3: every address `destination` resolves to, if none is denied.
    /// `more_internal` adds endpoints (URLs) known only at call time, such as the runtimes'.
    pub async fn resolve(
        &self,
        destination: &Destination,
        more_internal: &[String],
    ) -> Result<Vec<SocketAddr>, EgressRefusal> {
        let host = destination.host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, destination.port))
            .await
            .map_err(|e| EgressRefusal::Unresolvable { host: destination.host.clone(), why: e.to_string() })?
            .collect();
        if addresses.is_empty() {
            return Err(EgressRefusal::Unresolvable {
                host: destination.host.clone(),
                why: "no addresses".to_string(),
            });
        }
        let internal = resolve_all(self.denied_endpoints.iter().chain(more_internal)).await;
        for address in &addresses {
            let ip = canonical(address.ip());
            if let Some(network) = self.denied_networks.iter().find(|n| n.contains(&ip)) {
                return Err(EgressRefusal::Internal {
                    host: destination.host.clone(),
                    address: *address,
                    why: format!("inside the denied network {network}"),
                });
            }
            if let Some((endpoint, _)) =
                internal.iter().find(|(_, a)| canonical(a.ip()) == ip && a.port() == address.port())
            {
                return Err(EgressRefusal::Internal {
                    host: destination.host.clone(),
                    address: *address,
                    why: format!("a cluster-internal endpoint ({endpoint})"),
                });
            }
        }
        Ok(addresses)
    }

    /// Steps 1-4: a client that connects only to `url`'s checked addresses and follows no redirect, with the parsed URL.
    pub async fn client(
        &self,
        url: &str,
        more_internal: &[String],
    ) -> Result<(reqwest::Client, reqwest::Url), EgressRefusal> {
        let destination = self.destination(url)?;
        let key = (destination.host.clone(), destination.port);
        {
            let pinned = self.pinned.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = pinned.get(&key).filter(|p| p.at.elapsed() < PINNED_FOR) {
                return Ok((p.client.clone(), destination.url));
            }
        }
        let addresses = self.resolve(&destination, more_internal).await?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve_to_addrs(destination.host.trim_start_matches('[').trim_end_matches(']'), &addresses)
            .no_proxy()
            .pool_idle_timeout(PINNED_FOR)
            .build()
            .map_err(|e| EgressRefusal::BadUrl { url: url.to_string(), why: format!("no HTTP client: {e}") })?;
        let mut pinned = self.pinned.lock().unwrap_or_else(PoisonError::into_inner);
        pinned.retain(|_, p| p.at.elapsed() < PINNED_FOR);
        pinned.insert(key, Pinned { at: Instant::now(), client: client.clone() });
        Ok((client, destination.url))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The addresses of internal endpoints (URLs or `host:port`); those that do not resolve are skipped.
async fn resolve_all<'a>(endpoints: impl Iterator<Item = &'a String>) -> Vec<(String, SocketAddr)> {
    let mut resolved = Vec::new();
    for endpoint in endpoints {
        let (host, port) = match reqwest::Url::parse(endpoint) {
            Ok(url) if url.host_str().is_some() && url.port_or_known_default().is_some() => (
                url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string(),
                url.port_or_known_default().unwrap_or_default(),
            ),
            _ => match endpoint.rsplit_once(':').and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?))) {
                Some(pair) => pair,
                None => continue,
            },
        };
        if let Ok(addresses) = tokio::net::lookup_host((host.as_str(), port)).await {
            resolved.extend(addresses.map(|a| (endpoint.clone(), a)));
        }
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(allowed: &[&str], denied: &[&str], endpoints: &[&str]) -> Egress {
        Egress::new(
            allowed.iter().map(|a| a.parse().expect("a pattern")).collect(),
            denied.iter().map(|d| d.parse().expect("a network")).collect(),
            endpoints.iter().map(ToString::to_string).collect(),
        )
    }

    #[test]
    fn only_allowed_http_hosts_without_user_info_pass_the_first_checks() {
        let e = egress(&["tools.example.com", "*.corp.example"], &[], &[]);
        assert!(e.destination("https://tools.example.com/mcp").is_ok());
        assert!(e.destination("http://a.corp.example:8080/mcp").is_ok());
        for (url, refused) in [
            ("https://evil.example.net/mcp", "allow-list"),
            ("ftp://tools.example.com/", "only http"),
            ("https://user:pw@tools.example.com/", "user info"),
            ("not a url", "not usable"),
        ] {
            let refusal = e.destination(url).expect_err(url).to_string();
            assert!(refusal.contains(refused), "{url}: {refusal}");
        }
        let none = egress(&[], &[], &[]).destination("https://tools.example.com/").expect_err("empty list");
        assert!(none.to_string().contains("no connector may be called"), "{none}");
    }

    #[tokio::test]
    async fn a_name_that_resolves_into_a_denied_network_or_onto_an_internal_endpoint_is_refused() {
        let defaults =
            Egress::new(vec!["localhost".parse().expect("a pattern")], Egress::default_denied_networks(), vec![]);
        let at = defaults.destination("http://localhost:4000/mcp").expect("allowed by name");
        let refusal = defaults.resolve(&at, &[]).await.expect_err("loopback is denied by default");
        assert!(matches!(refusal, EgressRefusal::Internal { .. }), "{refusal}");
        let e = egress(&["localhost", "127.0.0.1"], &["169.254.0.0/16"], &["https://127.0.0.1:6443"]);
        let api = e.destination("https://localhost:6443/").expect("allowed by name");
        let refusal = e.resolve(&api, &[]).await.expect_err("the API server's endpoint");
        assert!(refusal.to_string().contains("cluster-internal endpoint (https://127.0.0.1:6443)"), "{refusal}");
        let runtime = e.destination("http://127.0.0.1:7860/").expect("allowed by address");
        assert!(e.resolve(&runtime, &["http://127.0.0.1:7860".into()]).await.is_err(), "a runtime named at call time");
        let tools = e.destination("http://localhost:4000/mcp").expect("allowed");
        assert!(e.resolve(&tools, &[]).await.is_ok(), "another port of the same address is not internal");
    }
}
