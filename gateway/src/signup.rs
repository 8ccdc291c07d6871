//! Sign-up on first login: a caller with a valid OIDC token who belongs to
//! no Organization gets one of their own, owned by their user name, with the
//! configured starter credits (granted once by the operator, as grant
//! `starter`, when it creates the Organization's Wallet) and the default
//! Project.
//!
//! - **Once per subject.** The Organization is named after the token's issuer
//!   and `sub` (`user-<16 hex>`), so two first calls, on one replica or two,
//!   create one Organization: the second create is a conflict, and the
//!   caller gets the same one.
//! - **Verified accounts only.** A user name that is an e-mail address is
//!   taken only when the identity provider verified it ([`crate::oidc`]),
//!   and a caller the Organizations already list (an owner by e-mail from a
//!   paid store order, or a member) gets those and no new one: a store
//!   buyer who signs in with the same verified address is one tenant, and an
//!   unverified account can neither claim the buyer's Organization nor sign
//!   up beside it.
//! - **Rate-limited** per replica (`--signup-per-minute`), and refused for
//!   user names the API server reserves (`system:`).
//!
//! The Organization and the Project are created with the gateway's own
//! rights, which the chart grants only with `gateway.signup.enabled`: create
//! Organizations, and create Projects (in the new control namespace, which
//! the operator makes).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cmp_crds::names::{GATEWAY_SIGNUP_MANAGER, MANAGED_BY_LABEL, SIGNUP_SUBJECT_ANNOTATION};
use cmp_crds::organization::{Subject as Owner, SubjectKind};
use cmp_crds::{Organization, OrganizationSpec, Project};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use sha2::{Digest, Sha256};

use crate::directory::Directory;
use crate::oidc::{Caller, Subject};
use crate::refusal::{Code, Refusal};

/// The longest display name an Organization takes (its schema's limit).
const MAX_DISPLAY_NAME: usize = 200;
/// How often the Project create is retried while the operator makes the control namespace.
const NAMESPACE_POLL: Duration = Duration::from_millis(250);

/// How sign-up behaves.
#[derive(Debug, Clone)]
pub struct SignupSettings {
    /// The new Organization's `spec.starterCredits`; None: the operator's default.
    pub starter_credits: Option<i64>,
    /// Labels put on the new Organization (besides the managed-by label).
    pub organization_labels: Vec<(String, String)>,
    /// Sign-ups this replica makes per minute, at most.
    pub per_minute: u32,
    /// How long a sign-up waits for the operator to create the control namespace before it answers 503.
    pub namespace_wait: Duration,
}

/// The Organization a sign-up creates for `subject`: `user-<16 hex of the issuer and sub>`.
pub fn organization_name(subject: &Subject) -> String {
    let mut hasher = Sha256::new();
    for part in ["signup", &subject.issuer, &subject.sub] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    format!("user-{}", hex::encode(&hasher.finalize()[..8]))
}

/// The Organization a sign-up creates for `caller`, or why it may not sign up.
pub fn desired_organization(caller: &Caller, settings: &SignupSettings) -> Result<Organization, Refusal> {
    let subject = caller.subject.as_ref().ok_or_else(|| {
        Refusal::new(Code::InvalidToken, "the token has no sub claim, which names the Organization a sign-up creates")
    })?;
    caller.not_reserved()?;
    let shown = caller.display_name.clone().unwrap_or_else(|| caller.username.clone());
    let display_name: String = shown.chars().take(MAX_DISPLAY_NAME).collect();
    let spec = OrganizationSpec {
        display_name,
        // A user name with @ is the account's verified e-mail address (crate::oidc).
        billing_email: caller.username.contains('@').then(|| caller.username.clone()),
        owners: vec![Owner { kind: SubjectKind::User, name: caller.username.clone() }],
        starter_credits: settings.starter_credits,
        ..OrganizationSpec::default()
    };
    let mut organization = Organization::new(&organization_name(subject), spec);
    let mut labels: std::collections::BTreeMap<String, String> = settings.organization_labels.iter().cloned().collect();
    labels.insert(MANAGED_BY_LABEL.to_string(), GATEWAY_SIGNUP_MANAGER.to_string());
    organization.metadata.labels = Some(labels);
    organization.metadata.annotations =
        Some([(SIGNUP_SUBJECT_ANNOTATION.to_string(), format!("{}#{}", subject.issuer, subject.sub))].into());
    Ok(organization)
}

/// Whether `organization` is the one a sign-up made for `caller` (and not, say, one an admin named alike).
pub fn made_for(organization: &Organization, caller: &Caller) -> bool {
    let Some(subject) = &caller.subject else { return false };
    let expected = format!("{}#{}", subject.issuer, subject.sub);
    organization.annotations().get(SIGNUP_SUBJECT_ANNOTATION) == Some(&expected) && caller.belongs_to(organization)
}

/// A token bucket: `per_minute` sign-ups a minute, and as many at once.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(per_minute: u32, now: Instant) -> Self {
        Self { tokens: f64::from(per_minute), at: now }
    }

    /// Takes one, or says in how many whole seconds one is there.
    fn take(&mut self, per_minute: u32, now: Instant) -> Result<(), u64> {
        let rate = f64::from(per_minute.max(1)) / 60.0;
        let refilled = self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = refilled.min(f64::from(per_minute));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(((1.0 - self.tokens) / rate).ceil() as u64)
    }
}

/// Sign-ups, made with the gateway's client.
pub struct Signup {
    client: Client,
    settings: SignupSettings,
    bucket: Mutex<Bucket>,
}

impl Signup {
    /// Sign-ups with `settings`, through `client`.
    pub fn new(client: Client, settings: SignupSettings) -> Self {
        let bucket = Bucket::full(settings.per_minute, Instant::now());
        Self { client, settings, bucket: Mutex::new(bucket) }
    }

    /// Takes one sign-up from the bucket, or says when to come back.
    fn take(&self, now: Instant) -> Result<(), Refusal> {
        let mut bucket = self.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        bucket.take(self.settings.per_minute, now).map_err(|seconds| {
            tracing::warn!(per_minute = self.settings.per_minute, "sign-ups over --signup-per-minute");
            let mut refusal = Refusal::new(Code::RateLimited, "too many sign-ups right now: try again shortly");
            refusal.retry_after = Some(seconds);
            refusal
        })
    }

    /// Creates `caller`'s Organization and its default Project, or finds them made by an earlier call; returns the
    /// Organization. A caller who already belongs to an Organization never gets here ([`crate::me`]).
    pub async fn sign_up(&self, caller: &Caller, directory: &Directory) -> Result<Organization, Refusal> {
        let desired = desired_organization(caller, &self.settings)?;
        let name = desired.name_any();
        let organizations = Api::<Organization>::all(self.client.clone());
        let params = PostParams { field_manager: Some(GATEWAY_SIGNUP_MANAGER.into()), ..PostParams::default() };
        match directory.organization(&name) {
            Some(existing) if made_for(&existing, caller) => {}
            Some(_) => return Err(taken(&name)),
            None => {
                self.take(Instant::now())?;
                match organizations.create(&params, &desired).await {
                    Ok(_) => {
                        tracing::info!(organization = %name, owner = %caller.username, "signed up");
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        self.created_by_another_call(caller, directory, &name).await?
                    }
                    // The API server's validation refused what the token made (an over-long user name, say):
                    // calling again would not help.
                    Err(kube::Error::Api(e)) if e.code == 422 => {
                        return Err(Refusal::new(
                            Code::InvalidToken,
                            format!("the token's identity cannot own an Organization: {}", e.message),
                        ));
                    }
                    Err(e) => return Err(unavailable(&format!("creating Organization {name}"), &e)),
                }
            }
        }
        self.default_project(&name).await?;
        Ok(desired)
    }

    /// Makes the default Project of the Organization a sign-up made for `caller`, among `listed`, when it is not
    /// there yet (an earlier sign-up answered 503 before the operator made the namespace).
    pub async fn finish(
        &self,
        caller: &Caller,
        listed: &[std::sync::Arc<Organization>],
        directory: &Directory,
    ) -> Result<(), Refusal> {
        for organization in listed.iter().filter(|o| made_for(o, caller)) {
            let name = organization.name_any();
            let namespace = cmp_crds::names::control_namespace(&name);
            if directory.project(&namespace, cmp_crds::names::DEFAULT_PROJECT).is_none() {
                self.default_project(&name).await?;
            }
        }
        Ok(())
    }

    /// After a conflicting create: waits for the cache to show the Organization, and checks it is the caller's.
    async fn created_by_another_call(&self, caller: &Caller, directory: &Directory, name: &str) -> Result<(), Refusal> {
        let deadline = tokio::time::Instant::now() + self.settings.namespace_wait;
        loop {
            match directory.organization(name) {
                Some(existing) if made_for(&existing, caller) => return Ok(()),
                Some(_) => return Err(taken(name)),
                None if tokio::time::Instant::now() >= deadline => return Err(setting_up(name)),
                None => tokio::time::sleep(NAMESPACE_POLL).await,
            }
        }
    }

    /// Creates the default Project once the operator has made the control namespace (a Project that exists is
    /// left as it is).
    async fn default_project(&self, organization: &str) -> Result<(), Refusal> {
        let project = cmp_crds::project::default_project(organization);
        let namespace = project.namespace().unwrap_or_default();
        let projects = Api::<Project>::namespaced(self.client.clone(), &namespace);
        let params = PostParams { field_manager: Some(GATEWAY_SIGNUP_MANAGER.into()), ..PostParams::default() };
        let deadline = tokio::time::Instant::now() + self.settings.namespace_wait;
        loop {
            match projects.create(&params, &project).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
                // The namespace is not there yet: the operator makes it from the Organization.
                Err(kube::Error::Api(e)) if e.code == 404 && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(NAMESPACE_POLL).await;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return Err(setting_up(organization)),
                Err(e) => return Err(unavailable(&format!("creating Project {namespace}/{}", project.name_any()), &e)),
            }
        }
    }
}

fn taken(name: &str) -> Refusal {
    Refusal::new(
        Code::WrongTenant,
        format!("Organization {name} exists and was not made for this account: ask the platform's administrators"),
    )
}

fn setting_up(name: &str) -> Refusal {
    let mut refusal = Refusal::new(
        Code::GatewayNotReady,
        format!("your Organization {name} is being set up (the operator has not made its namespace yet): call again"),
    );
    refusal.retry_after = Some(2);
    refusal
}

fn unavailable(what: &str, error: &kube::Error) -> Refusal {
    tracing::warn!(%error, "{what} failed");
    let mut refusal =
        Refusal::new(Code::GatewayNotReady, format!("{what} failed: the API server did not take it; call again"));
    refusal.retry_after = Some(2);
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(username: &str) -> Caller {
        Caller {
            username: username.into(),
            groups: vec![],
            subject: Some(Subject { issuer: "https://sso.example/realms/cmp".into(), sub: "0f6c-ada".into() }),
            display_name: Some("Ada Lovelace".into()),
        }
    }

    fn settings() -> SignupSettings {
        SignupSettings {
            starter_credits: Some(250),
            organization_labels: vec![("team".into(), "blue".into())],
            per_minute: 2,
            namespace_wait: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_organization_is_named_after_the_issuer_and_sub_and_owned_by_the_user_name() {
        let org = desired_organization(&caller("ada@example.com"), &settings()).expect("may sign up");
        let name = org.name_any();
        assert!(name.starts_with("user-") && name.len() == 21, "{name}");
        assert_eq!(
            name,
            organization_name(caller("other").subject.as_ref().expect("a subject")),
            "the name is the sub's"
        );
        assert_eq!(org.spec.owners, vec![Owner { kind: SubjectKind::User, name: "ada@example.com".into() }]);
        assert_eq!(org.spec.display_name, "Ada Lovelace");
        assert_eq!(org.spec.billing_email.as_deref(), Some("ada@example.com"));
        assert_eq!(org.spec.starter_credits, Some(250));
        assert_eq!(org.labels().get("team").map(String::as_str), Some("blue"));
        assert_eq!(org.labels().get(MANAGED_BY_LABEL).map(String::as_str), Some(GATEWAY_SIGNUP_MANAGER));
        assert!(made_for(&org, &caller("ada@example.com")));
        let mut elsewhere = caller("ada@example.com");
        elsewhere.subject = Some(Subject { issuer: "https://other.example".into(), sub: "0f6c-ada".into() });
        assert_ne!(organization_name(elsewhere.subject.as_ref().expect("a subject")), name, "another issuer's sub");
        assert!(!made_for(&org, &elsewhere), "the same sub of another issuer is someone else");
    }

    #[test]
    fn reserved_names_and_tokens_without_sub_do_not_sign_up() {
        let refused = desired_organization(&caller("system:admin"), &settings()).expect_err("reserved");
        assert_eq!(refused.code, Code::InvalidToken);
        let mut anonymous = caller("ada");
        anonymous.subject = None;
        assert_eq!(desired_organization(&anonymous, &settings()).expect_err("no sub").code, Code::InvalidToken);
        let plain = desired_organization(&caller("ada"), &settings()).expect("may sign up");
        assert_eq!(plain.spec.billing_email, None, "a user name without @ is not an e-mail address");
    }

    #[test]
    fn the_bucket_takes_per_minute_at_once_then_refills_at_that_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::full(2, start);
        assert_eq!(bucket.take(2, start), Ok(()));
        assert_eq!(bucket.take(2, start), Ok(()));
        assert_eq!(bucket.take(2, start), Err(30), "2 a minute: the next one in 30 s");
        assert_eq!(bucket.take(2, start + Duration::from_millis(29_500)), Err(1));
        assert_eq!(bucket.take(2, start + Duration::from_secs(31)), Ok(()));
        assert_eq!(bucket.take(2, start + Duration::from_secs(3600)), Ok(()), "it refills to per_minute, no more");
        assert_eq!(bucket.take(2, start + Duration::from_secs(3600)), Ok(()));
        assert!(bucket.take(2, start + Duration::from_secs(3600)).is_err());
    }

    #[test]
    fn a_long_display_name_is_cut_to_what_the_schema_takes() {
        let mut long = caller("ada");
        long.display_name = Some("é".repeat(500));
        let org = desired_organization(&long, &settings()).expect("may sign up");
        assert_eq!(org.spec.display_name.chars().count(), MAX_DISPLAY_NAME);
    }
}
