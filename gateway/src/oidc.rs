//! OIDC access tokens for first-party callers (the seed platform's
//! Keycloak): an RS256 JWT checked against the issuer's JWKS (cached,
//! fetched again once, rate-limited, for an unknown `kid`), with the
//! configured issuer and audience, and not expired. The caller is the
//! token's username claim (`sub` unless configured) and its groups claim;
//! it may run the Instances of the Organizations that list it, or one of
//! its groups, as an owner or a member.
//!
//! A user name that is an e-mail address names the Organizations a store
//! order created (their owner is the buyer's e-mail), so it is taken only
//! when the token's `email` is that address and `email_verified` is true:
//! an account that merely claims someone's address is refused
//! (`unverified_account`), wherever the token is used.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cmp_core::jwks::{CheckError, JwksCache, KeyError, rotated, verify_rs256};
use cmp_crds::Organization;
use cmp_crds::organization::SubjectKind;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use crate::refusal::{Code, Refusal};

/// How far a token's `exp` and `nbf` may be off the gateway's clock.
const LEEWAY_SECONDS: i64 = 10;
/// The longest token taken.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What the gateway trusts.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The issuer (`iss`), for example `https://sso.example/realms/cmp`.
    pub issuer: String,
    /// The audience the token must name (`aud`).
    pub audience: String,
    /// Where the issuer's keys are.
    pub jwks_url: String,
    /// The claim holding the caller's name, as Organizations list it.
    pub username_claim: String,
    /// The claim holding the caller's groups.
    pub groups_claim: String,
}

/// An authenticated first-party caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its name (the username claim).
    pub username: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// The token's issuer and `sub`: who the identity provider says it is, whatever its user name (sign-up names
    /// the caller's Organization after it). None for a token without `sub`.
    pub subject: Option<Subject>,
    /// The token's `name` claim, if any (what a sign-up shows as the Organization's name).
    pub display_name: Option<String>,
}

/// An identity provider's name for a user: its issuer and its `sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The token's `iss`.
    pub issuer: String,
    /// The token's `sub`.
    pub sub: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Checks tokens of one issuer.
pub struct Oidc {
    settings: OidcSettings,
    keys: JwksCache,
}

fn invalid(why: impl std::fmt::Display) -> Refusal {
    Refusal::new(Code::InvalidToken, format!("the bearer token is not valid: {why}"))
}

impl Oidc {
    /// Tokens of `settings.issuer`; its JWKS fetched again at most once per `min_refetch`.
    pub fn new(settings: OidcSettings, http: reqwest::Client, min_refetch: Duration) -> Self {
        Self { settings, keys: JwksCache::new(http, min_refetch) }
    }

    /// The caller a token speaks for.
    pub async fn authenticate(&self, token: &str, now: Timestamp) -> Result<Caller, Refusal> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("it is too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a JWT (header.payload.signature)"));
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD.decode(part).map_err(|_| invalid(format!("the {what} is not base64url")))
        };
        let parsed: Header =
            serde_json::from_slice(&decode(header, "header")?).map_err(|_| invalid("the header is not JSON"))?;
        if parsed.alg != "RS256" {
            return Err(invalid(format!("alg is {:?}; only RS256 is accepted", parsed.alg)));
        }
        let kid = parsed.kid.unwrap_or_default();
        let signature = decode(signature, "signature")?;
        let signed = &token.as_bytes()[..header.len() + 1 + payload.len()];
        let checked = self
            .keys
            .check(&self.settings.jwks_url, |jwks| verify_rs256(jwks, &kid, signed, &signature), rotated)
            .await;
        match checked {
            Ok(()) => {}
            Err(CheckError::Refused(KeyError::UnknownKid(kid))) => {
                return Err(invalid(format!("no key of the issuer has kid {kid:?}")));
            }
            Err(CheckError::Refused(e)) => return Err(invalid(e)),
            Err(CheckError::Jwks(e)) => {
                return Err(Refusal::new(
                    Code::GatewayNotReady,
                    format!("the issuer's keys cannot be fetched now ({e}); try again shortly"),
                ));
            }
        }
        let claims: Value =
            serde_json::from_slice(&decode(payload, "payload")?).map_err(|_| invalid("the payload is not JSON"))?;
        self.caller(&claims, now)
    }

    /// Checks the claims of a verified token.
    pub fn caller(&self, claims: &Value, now: Timestamp) -> Result<Caller, Refusal> {
        if claims["iss"].as_str() != Some(self.settings.issuer.as_str()) {
            return Err(invalid(format!("it was issued by {}, not {}", claims["iss"], self.settings.issuer)));
        }
        let audience = &self.settings.audience;
        let names_us = match &claims["aud"] {
            Value::String(aud) => aud == audience,
            Value::Array(auds) => auds.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !names_us {
            return Err(invalid(format!("its audience does not include {audience}")));
        }
        let now = now.as_second();
        let exp = claims["exp"].as_i64().ok_or_else(|| invalid("it has no exp"))?;
        if exp + LEEWAY_SECONDS <= now {
            return Err(invalid("it has expired"));
        }
        if claims["nbf"].as_i64().is_some_and(|nbf| nbf - LEEWAY_SECONDS > now) {
            return Err(invalid("it is not valid yet"));
        }
        let username = claims[self.settings.username_claim.as_str()]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(format!("it has no {} claim", self.settings.username_claim)))?
            .to_string();
        if username.contains('@') {
            let email_is_username = claims["email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(&username));
            if !email_is_username || claims["email_verified"].as_bool() != Some(true) {
                return Err(Refusal::new(
                    Code::UnverifiedAccount,
                    format!(
                        "the token's user name {username:?} is an e-mail address that the identity provider has not \
                         verified for this account (claims email and email_verified): verify the address with the \
                         identity provider, then sign in again"
                    ),
                ));
            }
        }
        let groups = claims[self.settings.groups_claim.as_str()]
            .as_array()
            .map(|g| g.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let subject = claims["sub"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|sub| Subject { issuer: self.settings.issuer.clone(), sub: sub.to_string() });
        let display_name = claims["name"].as_str().filter(|s| !s.trim().is_empty()).map(String::from);
        Ok(Caller { username, groups, subject, display_name })
    }
}

impl Caller {
    /// The caller's role in the Organization: `Owner`, else its strongest member role (by name or group).
    pub fn role_in(&self, organization: &Organization) -> Option<&'static str> {
        use cmp_crds::organization::Role;
        let me = |kind: SubjectKind, name: &str| match kind {
            SubjectKind::User => name == self.username,
            SubjectKind::Group => self.groups.iter().any(|g| g == name),
        };
        if organization.spec.owners.iter().any(|o| me(o.kind, &o.name)) {
            return Some("Owner");
        }
        let roles: Vec<Role> =
            organization.spec.members.iter().filter(|m| me(m.kind, &m.name)).map(|m| m.role).collect();
        [(Role::Admin, "Admin"), (Role::Developer, "Developer"), (Role::Viewer, "Viewer")]
            .into_iter()
            .find(|(role, _)| roles.contains(role))
            .map(|(_, shown)| shown)
    }

    /// Refuses a caller whose name or a group Kubernetes reserves (`system:`): CMP never makes one an owner, nor
    /// acts as one.
    pub fn not_reserved(&self) -> Result<(), Refusal> {
        match std::iter::once(&self.username).chain(&self.groups).find(|n| n.starts_with("system:")) {
            Some(name) => Err(Refusal::new(
                Code::InvalidToken,
                format!("the token names {name:?}, which Kubernetes reserves (system:): CMP does not act as it"),
            )),
            None => Ok(()),
        }
    }

    /// Whether the Organization lists the caller, or one of its groups, as an owner or a member.
    pub fn belongs_to(&self, organization: &Organization) -> bool {
        self.role_in(organization).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oidc() -> Oidc {
        let settings = OidcSettings {
            issuer: "https://sso.example/realms/cmp".into(),
            audience: "cmp-gateway".into(),
            jwks_url: "https://sso.example/realms/cmp/certs".into(),
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
        };
        Oidc::new(settings, reqwest::Client::new(), Duration::from_secs(10))
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("a time")
    }

    fn claims() -> Value {
        json!({"iss": "https://sso.example/realms/cmp", "aud": ["account", "cmp-gateway"], "exp": 1_800_000_300_i64,
               "preferred_username": "ada", "groups": ["acme-devs"], "sub": "ada-id", "name": "Ada Lovelace"})
    }

    #[test]
    fn a_token_for_us_names_its_caller() {
        let caller = oidc().caller(&claims(), now()).expect("valid");
        assert_eq!(
            caller,
            Caller {
                username: "ada".into(),
                groups: vec!["acme-devs".into()],
                subject: Some(Subject { issuer: "https://sso.example/realms/cmp".into(), sub: "ada-id".into() }),
                display_name: Some("Ada Lovelace".into()),
            }
        );
    }

    #[test]
    fn issuer_audience_and_time_are_checked() {
        let refused = |patch: Value| {
            let mut c = claims();
            for (k, v) in patch.as_object().expect("an object") {
                c[k] = v.clone();
            }
            oidc().caller(&c, now()).expect_err("refused").code
        };
        assert_eq!(refused(json!({"iss": "https://evil.example"})), Code::InvalidToken);
        assert_eq!(refused(json!({"aud": "account"})), Code::InvalidToken);
        assert_eq!(refused(json!({"exp": 1_800_000_000_i64 - 11})), Code::InvalidToken);
        assert_eq!(refused(json!({"nbf": 1_800_000_000_i64 + 60})), Code::InvalidToken);
        assert_eq!(refused(json!({"preferred_username": ""})), Code::InvalidToken);
    }

    #[test]
    fn a_user_name_that_is_an_e_mail_address_must_be_the_verified_address_of_the_account() {
        let as_email = |patch: Value| {
            let mut c = claims();
            c["preferred_username"] = json!("bob@example.com");
            for (k, v) in patch.as_object().expect("an object") {
                c[k] = v.clone();
            }
            oidc().caller(&c, now())
        };
        let verified = as_email(json!({"email": "Bob@Example.com", "email_verified": true})).expect("taken");
        assert_eq!(verified.username, "bob@example.com");
        for (claims, why) in [
            (json!({"email": "bob@example.com", "email_verified": false}), "not verified"),
            (json!({"email": "bob@example.com"}), "no email_verified"),
            (json!({"email": "bob@example.com", "email_verified": "true"}), "a string is not true"),
            (json!({"email": "mallory@example.com", "email_verified": true}), "another verified address"),
            (json!({"email_verified": true}), "no email"),
        ] {
            let refused = as_email(claims).expect_err(why);
            assert_eq!(refused.code, Code::UnverifiedAccount, "{why}");
            assert!(refused.message.contains("verify the address"), "{why}: {}", refused.message);
        }
        let plain = oidc().caller(&claims(), now()).expect("a user name without @ needs no e-mail");
        assert_eq!(plain.username, "ada");
    }

    #[test]
    fn membership_is_by_name_or_group() {
        let org: Organization = serde_json::from_value(json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Organization", "metadata": {"name": "acme"},
            "spec": {"displayName": "Acme", "owners": [{"name": "owner"}],
                     "members": [{"kind": "Group", "name": "acme-devs", "role": "Developer"}]}
        }))
        .expect("an Organization");
        let caller = |name: &str, groups: &[&str]| Caller {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            subject: None,
            display_name: None,
        };
        assert!(caller("owner", &[]).belongs_to(&org));
        assert_eq!(caller("owner", &[]).role_in(&org), Some("Owner"));
        assert_eq!(caller("ada", &["acme-devs"]).role_in(&org), Some("Developer"));
        assert_eq!(caller("eve", &["other"]).role_in(&org), None);
        assert!(caller("ada", &["acme-devs"]).belongs_to(&org));
        assert!(!caller("eve", &["other"]).belongs_to(&org));
        assert!(!caller("acme-devs", &[]).belongs_to(&org), "a user named like a group is not the group");
    }
}
