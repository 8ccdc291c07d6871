//! A real Keycloak (the OIDC provider the seed platform runs), from Maven
//! Central (`org.keycloak:keycloak-quarkus-dist`, installed once into the
//! cache by `xtask/keycloak/install.sh`), started in dev mode on loopback
//! with an in-memory database and a realm imported at start:
//!
//! - realm `cmp`, confidential client `cmp-gateway` (direct access grants),
//!   with an audience mapper (so `aud` holds `cmp-gateway`) and a
//!   `groups` claim (group names, no path);
//! - public client `cmp-console` (authorization code with PKCE S256 only),
//!   whose tokens carry the same claims, for the buyer console; it takes
//!   any redirect URI and web origin, as a test realm may (the gateway's
//!   port is chosen after Keycloak starts), where a real realm lists the
//!   console's URL;
//! - the users and groups a test asks for, each user's password its name
//!   followed by `-pass`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Error, free_port, workspace_root};

/// The Keycloak release the tests run.
pub const KEYCLOAK: &str = "26.7.3";
/// The realm.
pub const REALM: &str = "cmp";
/// The client the gateway is the audience of.
pub const CLIENT: &str = "cmp-gateway";
/// The client's secret.
pub const CLIENT_SECRET: &str = "cmp-gateway-test-secret";
/// The public client the buyer console signs in as.
pub const CONSOLE_CLIENT: &str = "cmp-console";

/// A running Keycloak; dropping it stops the process.
pub struct Keycloak {
    child: Child,
    url: String,
    log: PathBuf,
    /// The per-run copy of the install, removed on drop (it is ~190 MB).
    home: PathBuf,
}

/// Keycloak's unpacked distribution in the cache, downloaded on first use.
pub fn install() -> Result<PathBuf, Error> {
    crate::control_plane::run_install_script("xtask/keycloak/install.sh", &[KEYCLOAK])
}

/// A user of the test realm: password `<name>-pass`, first name `<name>`, last name `Test`.
#[derive(Debug, Clone)]
pub struct Account<'a> {
    /// The user name (`preferred_username`).
    pub name: &'a str,
    /// Its groups (the `groups` claim).
    pub groups: &'a [&'a str],
    /// Its e-mail address (the realm allows two accounts the same address).
    pub email: String,
    /// Whether the address is verified (`email_verified`).
    pub email_verified: bool,
}

impl<'a> Account<'a> {
    /// `name` in `groups`, with the verified address `<name>@example.com`.
    pub fn new(name: &'a str, groups: &'a [&'a str]) -> Self {
        Self { name, groups, email: format!("{name}@example.com"), email_verified: true }
    }
}

impl Keycloak {
    /// Starts Keycloak under `dir` with `users`, each `(name, groups)` (see [`Account::new`]), and
    /// waits (up to three minutes) until the realm answers.
    pub async fn start(dir: &Path, users: &[(&str, &[&str])]) -> Result<Self, Error> {
        let accounts: Vec<Account> = users.iter().map(|(name, groups)| Account::new(name, groups)).collect();
        Self::start_with(dir, &accounts).await
    }

    /// Like [`Keycloak::start`], with each account's e-mail address and whether it is verified.
    pub async fn start_with(dir: &Path, users: &[Account<'_>]) -> Result<Self, Error> {
        let install = install()?;
        // A copy per run: dev mode writes into its home (the Quarkus build, the import directory).
        let home = dir.join("keycloak");
        let _ = std::fs::remove_dir_all(&home);
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&install)
            .arg(&home)
            .status()
            .map_err(|source| Error::Spawn { binary: "cp".into(), source })?;
        if !copied.success() {
            return Err(Error::Build(format!("copying {} to {}", install.display(), home.display())));
        }
        let import = home.join("data/import");
        std::fs::create_dir_all(&import).map_err(|source| Error::Io { path: import.clone(), source })?;
        let realm = realm(users);
        let realm_file = import.join("cmp-realm.json");
        std::fs::write(&realm_file, realm.to_string()).map_err(|source| Error::Io { path: realm_file, source })?;
        let port = free_port()?;
        let log = dir.join("keycloak.log");
        let out = std::fs::File::create(&log).map_err(|source| Error::Io { path: log.clone(), source })?;
        let err = out.try_clone().map_err(|source| Error::Io { path: log.clone(), source })?;
        let child = Command::new(home.join("bin/kc.sh"))
            .args(["start-dev", "--http-host", "127.0.0.1", "--http-port", &port.to_string(), "--import-realm"])
            .args(["--db", "dev-mem", "--health-enabled", "false", "--cache", "local"])
            .env("KC_BOOTSTRAP_ADMIN_USERNAME", "admin")
            .env("KC_BOOTSTRAP_ADMIN_PASSWORD", "admin")
            .current_dir(workspace_root())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn { binary: "kc.sh".into(), source })?;
        let keycloak = Self { child, url: format!("http://127.0.0.1:{port}"), log, home };
        keycloak.wait_ready().await?;
        Ok(keycloak)
    }

    async fn wait_ready(&self) -> Result<(), Error> {
        let http = reqwest::Client::new();
        let discovery = format!("{}/.well-known/openid-configuration", self.issuer());
        for _ in 0..900 {
            if http.get(&discovery).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(Error::not_ready(format!("Keycloak did not serve {discovery} within 180 s"), &self.log))
    }

    /// The issuer URL of the realm.
    pub fn issuer(&self) -> String {
        format!("{}/realms/{REALM}", self.url)
    }

    /// The realm's JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/protocol/openid-connect/certs", self.issuer())
    }

    /// An access token for `user` (password grant).
    pub async fn token(&self, user: &str) -> Result<String, Error> {
        let answer = reqwest::Client::new()
            .post(format!("{}/protocol/openid-connect/token", self.issuer()))
            .form(&[
                ("grant_type", "password"),
                ("client_id", CLIENT),
                ("client_secret", CLIENT_SECRET),
                ("username", user),
                ("password", &format!("{user}-pass")),
                ("scope", "openid"),
            ])
            .send()
            .await
            .map_err(|e| Error::Process(format!("asking Keycloak for a token: {e}")))?;
        let status = answer.status();
        let body: Value = answer.json().await.map_err(|e| Error::Process(format!("Keycloak's token answer: {e}")))?;
        body["access_token"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| Error::Process(format!("Keycloak answered {status} without a token: {body}")))
    }
}

impl Drop for Keycloak {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn realm(users: &[Account]) -> Value {
    let mut groups: Vec<&str> = users.iter().flat_map(|u| u.groups.iter().copied()).collect();
    groups.sort_unstable();
    groups.dedup();
    let mappers = json!([
                {"name": "audience", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
                 "config": {"included.client.audience": CLIENT, "access.token.claim": "true", "id.token.claim": "false"}},
                {"name": "groups", "protocol": "openid-connect", "protocolMapper": "oidc-group-membership-mapper",
                 "config": {"claim.name": "groups", "full.path": "false", "access.token.claim": "true", "id.token.claim": "true", "userinfo.token.claim": "true"}},
                {"name": "username", "protocol": "openid-connect", "protocolMapper": "oidc-usermodel-property-mapper",
                 "config": {"user.attribute": "username", "claim.name": "preferred_username", "jsonType.label": "String", "access.token.claim": "true"}},
    ]);
    json!({
        "realm": REALM, "enabled": true, "duplicateEmailsAllowed": true,
        "accessTokenLifespan": 300,
        "groups": groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>(),
        "clients": [{
            "clientId": CLIENT, "enabled": true, "publicClient": false, "secret": CLIENT_SECRET,
            "directAccessGrantsEnabled": true, "serviceAccountsEnabled": true, "standardFlowEnabled": false,
            "protocolMappers": mappers,
        }, {
            "clientId": CONSOLE_CLIENT, "enabled": true, "publicClient": true, "standardFlowEnabled": true,
            "directAccessGrantsEnabled": false, "implicitFlowEnabled": false,
            "redirectUris": ["*"], "webOrigins": ["*"],
            "attributes": {"pkce.code.challenge.method": "S256", "post.logout.redirect.uris": "*"},
            "protocolMappers": mappers,
        }],
        "users": users.iter().map(|u| json!({
            "username": u.name, "enabled": true, "email": u.email, "emailVerified": u.email_verified,
            "firstName": u.name, "lastName": "Test",
            "credentials": [{"type": "password", "value": format!("{}-pass", u.name), "temporary": false}],
            "groups": u.groups,
        })).collect::<Vec<_>>(),
    })
}
