//! How the writer signs in to its remote and which servers it trusts: the
//! Secret named by `--gitops-credentials-secret`, read once at start.
//!
//! - HTTP(S): `username` and `password` (an access token); `ca.crt` adds a CA
//!   for a server whose certificate the system does not trust.
//! - SSH: `ssh-privatekey` (as in a `kubernetes.io/ssh-auth` Secret), optional
//!   `passphrase` and `username` (default: the URL's user, else `git`), and
//!   `known_hosts`, required: a host key not listed there is refused.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;

/// The flag that names the Secret, for error messages.
pub const FLAG: &str = "--gitops-credentials-secret";

/// What the Secret holds.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (HTTP), or the SSH user when the URL names none.
    pub username: Option<String>,
    /// The password or access token (HTTP).
    pub password: Option<String>,
    /// The SSH private key, in OpenSSH or PEM form.
    pub ssh_private_key: Option<String>,
    /// The private key's passphrase.
    pub passphrase: Option<String>,
    /// The SSH host keys the writer accepts, in OpenSSH's `known_hosts` form.
    pub known_hosts: Option<String>,
    /// CA certificates (PEM) trusted for an HTTPS remote, beside the system's.
    pub ca: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssh_private_key", &self.ssh_private_key.as_ref().map(|_| "<redacted>"))
            .field("known_hosts", &self.known_hosts.is_some())
            .field("ca", &self.ca.is_some())
            .finish_non_exhaustive()
    }
}

/// How a remote is reached, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `file://` or a path.
    Local,
    /// `http://`.
    Http,
    /// `https://`.
    Https,
    /// `ssh://[user@]host[:port]/path` or `[user@]host:path`.
    Ssh { user: Option<String>, host: String, port: u16 },
}

impl Transport {
    /// Reads the URL's scheme (and, for SSH, its user, host and port).
    pub fn of(url: &str) -> Self {
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Self::Https;
        }
        if lower.starts_with("http://") {
            return Self::Http;
        }
        let ssh_authority = |rest: &str| {
            let (user, host) = match rest.rsplit_once('@') {
                Some((user, host)) => (Some(user.to_string()), host),
                None => (None, rest),
            };
            (user, host.to_string())
        };
        if let Some(rest) = url.strip_prefix("ssh://").or_else(|| url.strip_prefix("git+ssh://")) {
            let authority = rest.split('/').next().unwrap_or_default();
            let (user, host_port) = ssh_authority(authority);
            let (host, port) = match host_port.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
                Some((host, rest)) => (host.to_string(), rest.strip_prefix(':').and_then(|p| p.parse().ok())),
                None => match host_port.rsplit_once(':') {
                    Some((host, port)) => (host.to_string(), port.parse().ok()),
                    None => (host_port, None),
                },
            };
            let port = port.unwrap_or(22);
            return Self::Ssh { user, host, port };
        }
        // scp-like `[user@]host:path`: a colon before any slash, and no scheme.
        if !url.contains("://")
            && let Some((authority, _path)) = url.split_once(':')
            && !authority.contains('/')
            && !authority.is_empty()
        {
            let (user, host) = ssh_authority(authority);
            return Self::Ssh { user, host, port: 22 };
        }
        Self::Local
    }
}

impl Credentials {
    /// A user name and password (or access token) for an HTTP(S) remote.
    pub fn password(username: &str, password: &str) -> Self {
        Self { username: Some(username.into()), password: Some(password.into()), ..Self::default() }
    }

    /// Reads the Secret's data; `secret` names it in errors.
    pub fn from_data(secret: &str, data: &BTreeMap<String, ByteString>) -> anyhow::Result<Self> {
        let known = ["username", "password", "ssh-privatekey", "passphrase", "known_hosts", "ca.crt"];
        let value = |key: &str| -> anyhow::Result<Option<String>> {
            let Some(bytes) = data.get(key) else { return Ok(None) };
            let text = String::from_utf8(bytes.0.clone())
                .map_err(|_| anyhow::anyhow!("{FLAG}: the key {key:?} of the Secret {secret} is not UTF-8"))?;
            Ok(Some(text))
        };
        let credentials = Self {
            username: value("username")?,
            password: value("password")?,
            ssh_private_key: value("ssh-privatekey")?,
            passphrase: value("passphrase")?,
            known_hosts: value("known_hosts")?,
            ca: value("ca.crt")?,
        };
        if !data.keys().any(|key| known.contains(&key.as_str())) {
            anyhow::bail!(
                "{FLAG}: the Secret {secret} has none of the keys {known:?}; give username and password for HTTP(S), or ssh-privatekey and known_hosts for SSH"
            );
        }
        if credentials.password.is_some() != credentials.username.is_some() && credentials.ssh_private_key.is_none() {
            anyhow::bail!("{FLAG}: the Secret {secret} needs both username and password (an access token)");
        }
        if let Some(ca) = &credentials.ca {
            trusted_roots(ca).map_err(|e| anyhow::anyhow!("{FLAG}: the key \"ca.crt\" of the Secret {secret}: {e}"))?;
        }
        Ok(credentials)
    }

    /// Reads the Secret `namespace/name`.
    pub async fn from_secret(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<Self> {
        let secrets = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace);
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|e| anyhow::anyhow!("{FLAG}: reading the Secret {namespace}/{name}: {e}"))?
            .ok_or_else(|| anyhow::anyhow!("{FLAG}: the Secret {namespace}/{name} does not exist; create it with username and password (HTTPS) or ssh-privatekey and known_hosts (SSH)"))?;
        Self::from_data(&format!("{namespace}/{name}"), &secret.data.unwrap_or_default())
    }

    /// Refuses credentials that cannot serve the remote `url`, naming what is missing.
    pub fn check_for(credentials: Option<&Self>, url: &str) -> anyhow::Result<()> {
        match (Transport::of(url), credentials) {
            (Transport::Ssh { .. }, None) => {
                anyhow::bail!("the SSH remote {url} needs {FLAG} naming a Secret with ssh-privatekey and known_hosts")
            }
            (Transport::Ssh { host, port, .. }, Some(credentials)) => {
                if credentials.ssh_private_key.is_none() {
                    anyhow::bail!("{FLAG}: the SSH remote {url} needs the key ssh-privatekey in the Secret");
                }
                let Some(known_hosts) = &credentials.known_hosts else {
                    anyhow::bail!(
                        "{FLAG}: the SSH remote {url} needs the key known_hosts in the Secret (for example the output of ssh-keyscan -p {port} {host})"
                    );
                };
                if host_keys(known_hosts, &host, port).is_empty() {
                    anyhow::bail!(
                        "{FLAG}: known_hosts in the Secret lists no key for {} (hashed names are not read; use ssh-keyscan's plain output)",
                        known_hosts_name(&host, port)
                    );
                }
                Ok(())
            }
            (Transport::Http | Transport::Https, Some(credentials)) if credentials.password.is_none() => {
                anyhow::bail!(
                    "{FLAG}: the HTTP(S) remote {url} needs username and password (an access token) in the Secret"
                )
            }
            _ => Ok(()),
        }
    }

    /// Answers libgit2's request for credentials; `user_from_url` is the URL's user, if any.
    pub fn git2(&self, user_from_url: Option<&str>, allowed: git2::CredentialType) -> Result<git2::Cred, git2::Error> {
        let user = user_from_url.or(self.username.as_deref()).unwrap_or("git");
        if allowed.contains(git2::CredentialType::SSH_KEY)
            && let Some(key) = &self.ssh_private_key
        {
            return git2::Cred::ssh_key_from_memory(user, None, key, self.passphrase.as_deref());
        }
        if allowed.contains(git2::CredentialType::USERNAME) {
            return git2::Cred::username(user);
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT)
            && let (Some(username), Some(password)) = (&self.username, &self.password)
        {
            return git2::Cred::userpass_plaintext(username, password);
        }
        Err(git2::Error::from_str(&format!(
            "the Secret named by {FLAG} holds no credentials of the kind the remote asks for"
        )))
    }

    /// Decides whether to trust the server: an SSH host key must be in
    /// `known_hosts`; an HTTPS certificate the system does not trust is
    /// accepted when `ca.crt` vouches for it.
    pub fn check_certificate(
        &self,
        cert: &git2::cert::Cert<'_>,
        url: &str,
    ) -> Result<git2::CertificateCheckStatus, git2::Error> {
        if let Some(hostkey) = cert.as_hostkey() {
            let Transport::Ssh { host, port, .. } = Transport::of(url) else {
                return Err(git2::Error::from_str("an SSH host key from a remote that is not SSH"));
            };
            let name = known_hosts_name(&host, port);
            let offered = hostkey.hostkey().unwrap_or_default();
            let listed = self.known_hosts.as_deref().map(|k| host_keys(k, &host, port)).unwrap_or_default();
            if listed.iter().any(|key| key.as_slice() == offered) {
                return Ok(git2::CertificateCheckStatus::CertificateOk);
            }
            return Err(git2::Error::from_str(&format!(
                "host key verification failed: the host key of {name} is not in known_hosts of the Secret named by {FLAG}"
            )));
        }
        if let (Some(x509), Some(ca)) = (cert.as_x509(), &self.ca)
            && verify_with_ca(ca, x509.data(), url).is_ok()
        {
            return Ok(git2::CertificateCheckStatus::CertificateOk);
        }
        Ok(git2::CertificateCheckStatus::CertificatePassthrough)
    }
}

/// How `known_hosts` names a host: `host`, or `[host]:port` off port 22.
pub(crate) fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

/// The keys (SSH wire form) that `known_hosts` lists for `host` and `port`.
fn host_keys(known_hosts: &str, host: &str, port: u16) -> Vec<Vec<u8>> {
    use base64::Engine;
    let name = known_hosts_name(host, port);
    known_hosts
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let mut hosts = fields.next()?;
            if hosts.starts_with('@') {
                if hosts == "@revoked" {
                    return None;
                }
                hosts = fields.next()?;
            }
            let _kind = fields.next()?;
            let key = fields.next()?;
            hosts.split(',').any(|pattern| pattern == name).then_some(key)
        })
        .filter_map(|key| base64::engine::general_purpose::STANDARD.decode(key).ok())
        .collect()
}

/// The certificates of a PEM bundle, as rustls roots.
fn trusted_roots(pem: &str) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
        roots.add(cert).map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(roots)
}

/// Checks a server certificate (DER) for the URL's host against the CA bundle.
fn verify_with_ca(ca: &str, der: &[u8], url: &str) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let roots = trusted_roots(ca)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let host = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split('/').next())
        .map(|authority| authority.rsplit_once('@').map_or(authority, |(_, host)| host))
        .map(|host_port| match host_port.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => host_port,
        })
        .unwrap_or_default()
        .trim_matches(|c| c == '[' || c == ']');
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(&CertificateDer::from(der.to_vec()), &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn transports_are_read_from_the_url() {
        assert_eq!(Transport::of("file:///srv/git/t.git"), Transport::Local);
        assert_eq!(Transport::of("/srv/git/t.git"), Transport::Local);
        assert_eq!(Transport::of("https://git.example/t.git"), Transport::Https);
        assert_eq!(Transport::of("HTTP://git.example/t.git"), Transport::Http);
        let ssh = |user: Option<&str>, host: &str, port| Transport::Ssh {
            user: user.map(Into::into),
            host: host.into(),
            port,
        };
        assert_eq!(Transport::of("ssh://git@git.example:2222/t.git"), ssh(Some("git"), "git.example", 2222));
        assert_eq!(Transport::of("ssh://git.example/t.git"), ssh(None, "git.example", 22));
        assert_eq!(Transport::of("ssh://git@[::1]:2200/t.git"), ssh(Some("git"), "::1", 2200));
        assert_eq!(Transport::of("git@github.com:acme/tenants.git"), ssh(Some("git"), "github.com", 22));
    }

    #[test]
    fn known_hosts_lines_are_matched_by_name_and_port() {
        let known = "# scanned\n\
            git.example ssh-ed25519 AAAA\n\
            [git.example]:2222,10.0.0.1 ssh-ed25519 AAAB\n\
            @revoked git.example ssh-ed25519 AAAC\n\
            |1|hashed= ssh-ed25519 AAAD\n";
        assert_eq!(host_keys(known, "git.example", 22), vec![vec![0, 0, 0]]);
        assert_eq!(host_keys(known, "git.example", 2222), vec![vec![0, 0, 1]]);
        assert!(host_keys(known, "other.example", 22).is_empty());
    }

    #[test]
    fn secrets_are_checked_against_the_remote() {
        let http = Credentials::from_data("ns/s", &data(&[("username", "u"), ("password", "p")])).expect("http");
        assert!(Credentials::check_for(Some(&http), "https://git.example/t.git").is_ok());
        let refused = Credentials::check_for(Some(&http), "ssh://git@git.example/t.git").expect_err("no key");
        assert!(refused.to_string().contains("ssh-privatekey"), "{refused}");
        let refused = Credentials::check_for(None, "git@git.example:t.git").expect_err("no secret");
        assert!(refused.to_string().contains(FLAG), "{refused}");

        let key_only = Credentials::from_data("ns/s", &data(&[("ssh-privatekey", "KEY")])).expect("ssh");
        let refused = Credentials::check_for(Some(&key_only), "ssh://git@git.example:2222/t.git").expect_err("hosts");
        assert!(refused.to_string().contains("ssh-keyscan -p 2222 git.example"), "{refused}");
        let wrong_host = Credentials { known_hosts: Some("other ssh-ed25519 AAAA".into()), ..key_only.clone() };
        let refused = Credentials::check_for(Some(&wrong_host), "ssh://git@git.example:2222/t.git").expect_err("host");
        assert!(refused.to_string().contains("[git.example]:2222"), "{refused}");
        let ssh = Credentials { known_hosts: Some("[git.example]:2222 ssh-ed25519 AAAA".into()), ..key_only };
        assert!(Credentials::check_for(Some(&ssh), "ssh://git@git.example:2222/t.git").is_ok());
        let refused = Credentials::check_for(Some(&ssh), "https://git.example/t.git").expect_err("no password");
        assert!(refused.to_string().contains("username and password"), "{refused}");
    }

    #[test]
    fn bad_secrets_are_refused_with_what_to_give() {
        let empty = Credentials::from_data("ns/s", &data(&[("token", "x")])).expect_err("unknown keys");
        assert!(empty.to_string().contains("ns/s") && empty.to_string().contains("known_hosts"), "{empty}");
        let half = Credentials::from_data("ns/s", &data(&[("username", "u")])).expect_err("no password");
        assert!(half.to_string().contains("both username and password"), "{half}");
        let ca = Credentials::from_data("ns/s", &data(&[("username", "u"), ("password", "p"), ("ca.crt", "nope")]));
        assert!(ca.expect_err("bad CA").to_string().contains("ca.crt"));
        let mut binary = data(&[("username", "u")]);
        binary.insert("password".into(), ByteString(vec![0xff, 0xfe]));
        assert!(Credentials::from_data("ns/s", &binary).expect_err("binary").to_string().contains("not UTF-8"));
    }

    #[test]
    fn debug_output_hides_the_secrets() {
        let credentials =
            Credentials { ssh_private_key: Some("PRIVATE".into()), ..Credentials::password("u", "TOKEN") };
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("PRIVATE") && !shown.contains("TOKEN"), "{shown}");
    }
}
