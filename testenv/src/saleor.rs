//! A stand-in for a Saleor store's signing side, for tests and benchmarks:
//! every delivery is signed by PyJWT (an independent JOSE implementation)
//! exactly as Saleor signs it (RS256, detached, `b64: false`, `crit`), and the
//! store's JWKS is served over real HTTP at `/.well-known/jwks.json`. The key
//! can be rotated during a test.
//!
//! It stands in for Saleor, which cannot run here (it is not on PyPI, and
//! there is no Docker engine), and reproduces only what the webhook sees of
//! a store: the signed bytes, the headers and the keys. The signatures are
//! real, made by an independent JOSE library, never by our own code.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::Error;

/// PyJWT version the signer runs.
pub const PYJWT: &str = "pyjwt[crypto]==2.10.1";

/// Python that makes a store key as Saleor does: `key()` gives the private
/// PEM, the kid (the RFC 7638 thumbprint) and the public JWK; `sign(body, pem,
/// kid, crit=True)` signs like Saleor (PyJWT, detached, `b64: false`).
pub const PYJWT_KEYS: &str = r#"
import base64, hashlib, json, sys
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm

def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def key():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    thumb = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True)
    kid = b64(hashlib.sha256(thumb.encode()).digest())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = {"kty": "RSA", "key_ops": ["verify"], "n": jwk["n"], "e": jwk["e"], "use": "sig", "kid": kid, "alg": "RS256"}
    return pem, kid, public

def sign(body, pem, kid, crit=True):
    headers = {"kid": kid}
    if crit:
        headers["crit"] = ["b64"]
    return jwt.api_jws.encode(body, pem, algorithm="RS256", headers=headers, is_payload_detached=True)
"#;

/// Reads commands on stdin, one JSON per line: `{"sign": "<body, base64>"}`
/// answers `{"signature"}`; `{"rotate": true}` adds a new key, signs with it
/// from then on, and answers `{"jwks"}`. Prints `{"jwks"}` on start.
const SIGNER_LOOP: &str = r#"
pem, kid, public = key()
keys = [public]
print(json.dumps({"jwks": {"keys": keys}}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if "sign" in cmd:
        print(json.dumps({"signature": sign(base64.b64decode(cmd["sign"]), pem, kid)}), flush=True)
    elif "rotate" in cmd:
        pem, kid, public = key()
        keys.append(public)
        print(json.dumps({"jwks": {"keys": keys}}), flush=True)
"#;

struct Signer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Signer {
    fn ask(&mut self, command: &Value) -> Result<Value, Error> {
        let failed = |e: std::io::Error| Error::Process(format!("talking to the PyJWT signer: {e}"));
        writeln!(self.stdin, "{command}").map_err(failed)?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(failed)?;
        serde_json::from_str(&line).map_err(|e| Error::Process(format!("the PyJWT signer answered {line:?}: {e}")))
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store's JWKS served over real HTTP at `/.well-known/jwks.json` on
/// 127.0.0.1, counting fetches; the JWKS can be swapped (a key rotation).
/// Its `/graphql/` answers, for a token the store issued
/// ([`JwksServer::issue_token`]), what the webhook asks of a store as Saleor
/// 3.21 answers it (the documents are checked against Saleor's schema where
/// they are written): `query { app { id } }` on registration, and the app's
/// webhooks with `webhookUpdate` and `webhookCreate` to bring them up to
/// date; any other token gets `app: null` with Saleor's permission error.
pub struct JwksServer {
    api_url: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    tokens: Arc<Mutex<Vec<String>>>,
    webhooks: Arc<Mutex<Vec<Value>>>,
    mutations: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

/// The app's id the stand-in answers for a token it issued.
pub const APP_ID: &str = "QXBwOjE=";

/// What the stand-in store keeps of the app: its tokens and webhooks.
#[derive(Clone, Default)]
struct AppState {
    tokens: Arc<Mutex<Vec<String>>>,
    webhooks: Arc<Mutex<Vec<Value>>>,
    mutations: Arc<AtomicUsize>,
}

/// Saleor's answer to a GraphQL request from the bearer of `authorization`.
fn graphql_answer(app: &AppState, authorization: Option<&str>, body: &Value) -> Value {
    let query: String = body["query"].as_str().unwrap_or_default().split_whitespace().collect();
    let token = authorization.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default();
    let tokens = app.tokens.lock().map(|t| t.clone()).unwrap_or_default();
    if token.is_empty() || !tokens.iter().any(|t| t == token) {
        return json!({"data": {"app": null}, "errors": [{
            "message": "You need one of the following permissions: AUTHENTICATED_STAFF_USER, AUTHENTICATED_APP",
            "extensions": {"exception": {"code": "PermissionDenied"}}}]});
    }
    let Ok(mut webhooks) = app.webhooks.lock() else { return json!({"errors": [{"message": "poisoned"}]}) };
    let input = &body["variables"]["input"];
    let events = |input: &Value| -> Value {
        json!(
            input["asyncEvents"].as_array().into_iter().flatten().map(|e| json!({"eventType": e})).collect::<Vec<_>>()
        )
    };
    if query.contains("webhookUpdate(") {
        app.mutations.fetch_add(1, Ordering::SeqCst);
        let id = body["variables"]["id"].as_str().unwrap_or_default();
        let Some(webhook) = webhooks.iter_mut().find(|w| w["id"] == id) else {
            return json!({"data": {"webhookUpdate": {"errors": [{"field": "id", "message": "Couldn't resolve to a node", "code": "NOT_FOUND"}], "webhook": null}}});
        };
        if let Some(query) = input["query"].as_str() {
            webhook["subscriptionQuery"] = json!(query);
        }
        if input.get("asyncEvents").is_some() {
            webhook["asyncEvents"] = events(input);
        }
        json!({"data": {"webhookUpdate": {"errors": [], "webhook": {"id": id}}}})
    } else if query.contains("webhookCreate(") {
        app.mutations.fetch_add(1, Ordering::SeqCst);
        let id = format!("V2ViaG9vazo{}", webhooks.len() + 100);
        webhooks.push(
            json!({"id": id, "name": input["name"], "isActive": input["isActive"], "targetUrl": input["targetUrl"],
            "asyncEvents": events(input), "subscriptionQuery": input["query"]}),
        );
        json!({"data": {"webhookCreate": {"errors": [], "webhook": {"id": id}}}})
    } else if query.contains("app{idwebhooks{") {
        json!({"data": {"app": {"id": APP_ID, "webhooks": webhooks.clone()}}})
    } else if query.contains("app{id}") {
        json!({"data": {"app": {"id": APP_ID}}})
    } else {
        json!({"errors": [{"message": "this stand-in answers only what the webhook asks of a store"}]})
    }
}

impl JwksServer {
    /// Serves `jwks`; the store's API URL is `http://127.0.0.1:<port>/<a name unique to this store>/graphql/`.
    pub async fn start(jwks: Value) -> Result<Self, Error> {
        Self::start_at(jwks, std::net::Ipv4Addr::LOCALHOST).await
    }

    /// Like [`JwksServer::start`], listening on `address` (a node's bridge, for pods to reach).
    pub async fn start_at(jwks: Value, address: std::net::Ipv4Addr) -> Result<Self, Error> {
        let (jwks, fetches) = (Arc::new(Mutex::new(jwks)), Arc::new(AtomicUsize::new(0)));
        // Each store's API URL is unique, though ports are reused: orders are keyed by the API URL, and
        // what one test's store did (a cancellation remembered) must never meet another's.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let store = format!("store-{}-{}-{nanos}", std::process::id(), STARTED.fetch_add(1, Ordering::SeqCst));
        let state = AppState::default();
        let (served, counted, app) = (jwks.clone(), fetches.clone(), state.clone());
        let router = axum::Router::new()
            .route(
                "/.well-known/jwks.json",
                axum::routing::get(move || {
                    let (served, counted) = (served.clone(), counted.clone());
                    async move {
                        counted.fetch_add(1, Ordering::SeqCst);
                        axum::Json(served.lock().map(|j| j.clone()).unwrap_or(Value::Null))
                    }
                }),
            )
            .route(
                &format!("/{store}/graphql/"),
                axum::routing::post(move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                    let app = app.clone();
                    async move {
                        let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
                        axum::Json(graphql_answer(&app, authorization, &body))
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind((address, 0))
            .await
            .map_err(|e| Error::Process(format!("binding the JWKS server: {e}")))?;
        let port = listener.local_addr().map_err(|e| Error::Process(e.to_string()))?.port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let AppState { tokens, webhooks, mutations } = state;
        Ok(Self {
            api_url: format!("http://{address}:{port}/{store}/graphql/"),
            jwks,
            fetches,
            tokens,
            webhooks,
            mutations,
            server,
        })
    }

    /// The app's webhooks in the store (as `app { webhooks }` lists them).
    pub fn webhooks(&self) -> Vec<Value> {
        self.webhooks.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Sets the app's webhooks, as an install made them.
    pub fn set_webhooks(&self, webhooks: Vec<Value>) {
        if let Ok(mut current) = self.webhooks.lock() {
            *current = webhooks;
        }
    }

    /// How many webhook mutations the store received.
    pub fn mutations(&self) -> usize {
        self.mutations.load(Ordering::SeqCst)
    }

    /// Makes `token` one the store issued to the app (its `/graphql/` answers the app's id for it).
    pub fn issue_token(&self, token: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.push(token.to_string());
        }
    }

    /// The store's API URL, as Saleor sends it in `Saleor-Api-Url`.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Serves `jwks` from now on.
    pub fn set(&self, jwks: Value) {
        if let Ok(mut served) = self.jwks.lock() {
            *served = jwks;
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A stand-in for one Saleor store: its API URL, its signer and its JWKS server.
pub struct SaleorStandIn {
    signer: Mutex<Signer>,
    jwks: JwksServer,
}

impl std::ops::Deref for SaleorStandIn {
    type Target = JwksServer;

    fn deref(&self) -> &JwksServer {
        &self.jwks
    }
}

/// The venv with PyJWT (the independent library that signs the stand-in's deliveries), installed on first use.
pub fn pyjwt_venv() -> Result<PathBuf, Error> {
    crate::lfx::python_venv("pyjwt", PYJWT)
}

impl SaleorStandIn {
    /// Starts the signer (installing PyJWT into the cache on first use) and
    /// serves its JWKS on 127.0.0.1; the API URL is unique to the store ([`JwksServer::start`]).
    pub async fn start() -> Result<Self, Error> {
        Self::start_at(std::net::Ipv4Addr::LOCALHOST).await
    }

    /// Like [`SaleorStandIn::start`], its JWKS and API served on `address`.
    pub async fn start_at(address: std::net::Ipv4Addr) -> Result<Self, Error> {
        let venv = pyjwt_venv()?;
        let mut child = Command::new(venv.join("bin/python"))
            .args(["-c", &format!("{PYJWT_KEYS}{SIGNER_LOOP}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::Process(format!("starting the PyJWT signer: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Process("the PyJWT signer has no pipes".into()));
        };
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        stdout.read_line(&mut first).map_err(|e| Error::Process(format!("reading the PyJWT signer: {e}")))?;
        let start: Value = serde_json::from_str(&first)
            .map_err(|e| Error::Process(format!("the PyJWT signer printed {first:?}: {e}")))?;
        let jwks = JwksServer::start_at(start["jwks"].clone(), address).await?;
        Ok(Self { signer: Mutex::new(Signer { child, stdin, stdout }), jwks })
    }

    /// The store's API URL, as Saleor sends it in `Saleor-Api-Url`.
    pub fn api_url(&self) -> &str {
        self.jwks.api_url()
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks.fetches()
    }

    /// The `Saleor-Signature` of `body`, made by PyJWT.
    pub fn sign(&self, body: &[u8]) -> Result<String, Error> {
        use base64::Engine;
        let mut signer = self.signer.lock().map_err(|_| Error::Process("the signer lock is poisoned".into()))?;
        let answer = signer.ask(&json!({"sign": base64::engine::general_purpose::STANDARD.encode(body)}))?;
        answer["signature"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::Process(format!("no signature in {answer}")))
    }

    /// Rotates the key: the JWKS now lists a new key too, and deliveries are signed with it.
    pub fn rotate(&self) -> Result<(), Error> {
        let jwks = self.rotate_unpublished()?;
        self.jwks.set(jwks);
        Ok(())
    }

    /// Rotates the key as a rolling rotation does: deliveries are signed with
    /// the new key at once, while the JWKS served still lists only the old
    /// ones. Answers the JWKS to serve once the rotation is published ([`JwksServer::set`]).
    pub fn rotate_unpublished(&self) -> Result<Value, Error> {
        let mut signer = self.signer.lock().map_err(|_| Error::Process("the signer lock is poisoned".into()))?;
        let answer = signer.ask(&json!({"rotate": true}))?;
        Ok(answer["jwks"].clone())
    }

    /// Delivers `body` as Saleor does: signed, with the Saleor headers, to `url`.
    pub async fn deliver(
        &self,
        http: &reqwest::Client,
        url: &str,
        event: &str,
        body: &[u8],
    ) -> Result<(u16, Value), Error> {
        let signature = self.sign(body)?;
        send(
            http,
            url,
            &[
                ("saleor-event", event),
                ("saleor-domain", "store.example.com"),
                ("saleor-api-url", self.api_url()),
                ("saleor-signature", &signature),
            ],
            body,
        )
        .await
    }
}

/// POSTs `body` to `url` with `headers`; answers the status and the JSON body (Null when not JSON).
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Value), Error> {
    let mut request = http.post(url).header("content-type", "application/json").body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.map_err(|e| Error::Process(format!("POST {url}: {e}")))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| Error::Process(format!("reading the answer of {url}: {e}")))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}
