//! Saleor signatures made by an independent JOSE implementation: PyJWT (as
//! Saleor's own code signs, detached and unencoded), checked by the webhook's
//! verifier over the exact raw bytes, with a key rotation.

use std::time::Duration;

use cmp_testenv::saleor::{JwksServer, PYJWT_KEYS};
use cmp_webhook::jwks::{JwksCache, VerifyError};
use cmp_webhook::signature::{Jwks, Signature, SignatureError, parse, verify_jws};
use serde_json::Value;

/// Signs like Saleor (`jwt.api_jws.encode(..., is_payload_detached=True)`) with two fresh RSA keys.
/// Two fresh keys, and the signatures the checks need (after `PYJWT_KEYS`).
const SIGNER: &str = r#"
(pem1, kid1, jwk1), (pem2, kid2, jwk2) = key(), key()
body = json.dumps({"order": {"id": "T3JkZXI6MQ==", "lines": [{"productSku": "ECHO-FREE", "quantity": 1}]}}).encode()
json.dump({
    "body": body.decode(),
    "jwks": {"keys": [jwk1]},
    "rotated_jwks": {"keys": [jwk1, jwk2]},
    "signature": sign(body, pem1, kid1),
    "signature_without_crit": sign(body, pem1, kid1, crit=False),
    "signature_by_rotated_key": sign(body, pem2, kid2),
}, sys.stdout)
"#;

fn signed_by_pyjwt() -> Value {
    let venv = cmp_testenv::saleor::pyjwt_venv().expect("PyJWT installs");
    let output = std::process::Command::new(venv.join("bin/python"))
        .args(["-c", &format!("{PYJWT_KEYS}{SIGNER}")])
        .output()
        .expect("python runs");
    assert!(output.status.success(), "PyJWT failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("the signer prints JSON")
}

fn check(signature: &str, body: &[u8], jwks: &Value) -> Result<(), SignatureError> {
    let jwks: Jwks = serde_json::from_value(jwks.clone()).expect("a JWKS");
    match parse(Some(signature))? {
        Signature::Jws { header, encoded_header, signature } => {
            verify_jws(&header, &encoded_header, &signature, body, &jwks)
        }
        Signature::Hmac(_) => panic!("PyJWT made a JWS"),
    }
}

#[test]
fn saleor_style_signatures_verify_over_the_raw_body_and_every_tampering_is_refused() {
    let fixture = signed_by_pyjwt();
    let text = |k: &str| fixture[k].as_str().expect(k).to_string();
    let (body, signature) = (text("body"), text("signature"));
    assert!(body.contains("\", \"") || body.contains("\": "), "Saleor-style separators: {body}");
    assert_eq!(check(&signature, body.as_bytes(), &fixture["jwks"]), Ok(()));
    assert_eq!(
        check(&text("signature_without_crit"), body.as_bytes(), &fixture["jwks"]),
        Ok(()),
        "crit is not required"
    );

    // The body re-serialised (same JSON, other separators) or changed after signing.
    let compact = serde_json::to_string(&serde_json::from_str::<Value>(&body).expect("json")).expect("json");
    assert_eq!(check(&signature, compact.as_bytes(), &fixture["jwks"]), Err(SignatureError::Mismatch));
    let changed = body.replace("\"quantity\": 1", "\"quantity\": 9");
    assert_eq!(check(&signature, changed.as_bytes(), &fixture["jwks"]), Err(SignatureError::Mismatch));

    // A forged or truncated signature.
    let (head, sig) = signature.split_once("..").expect("detached");
    let mut forged: Vec<char> = sig.chars().collect();
    forged[10] = if forged[10] == 'A' { 'B' } else { 'A' };
    let forged = format!("{head}..{}", forged.into_iter().collect::<String>());
    assert_eq!(check(&forged, body.as_bytes(), &fixture["jwks"]), Err(SignatureError::Mismatch));
    let truncated = &signature[..signature.len() - 20];
    assert!(check(truncated, body.as_bytes(), &fixture["jwks"]).is_err(), "a truncated signature is refused");

    // Key rotation: the new key's kid is unknown to the old JWKS (the caller refetches once), known to the new one.
    let rotated = text("signature_by_rotated_key");
    assert!(matches!(check(&rotated, body.as_bytes(), &fixture["jwks"]), Err(SignatureError::UnknownKid(_))));
    assert_eq!(check(&rotated, body.as_bytes(), &fixture["rotated_jwks"]), Ok(()));
}

async fn verify(cache: &JwksCache, api_url: &str, signature: &str, body: &str) -> Result<(), VerifyError> {
    let Ok(Signature::Jws { header, encoded_header, signature }) = parse(Some(signature)) else { panic!("a JWS") };
    cache.verify(api_url, &header, &encoded_header, &signature, body.as_bytes()).await
}

#[tokio::test]
async fn the_jwks_is_cached_refetched_once_on_rotation_and_forgeries_cannot_force_fetches() {
    let fixture = signed_by_pyjwt();
    let text = |k: &str| fixture[k].as_str().expect(k).to_string();
    let body = text("body");
    let store = JwksServer::start(fixture["jwks"].clone()).await.expect("the JWKS is served");
    let api_url = store.api_url().to_string();
    let cache = JwksCache::new(reqwest::Client::new(), Duration::from_millis(500));

    verify(&cache, &api_url, &text("signature"), &body).await.expect("verifies");
    verify(&cache, &api_url, &text("signature"), &body).await.expect("verifies");
    assert_eq!(store.fetches(), 1, "fetched once, then cached");

    // The store rotates its key: the unknown kid fetches the JWKS again, once.
    store.set(fixture["rotated_jwks"].clone());
    tokio::time::sleep(Duration::from_millis(600)).await;
    verify(&cache, &api_url, &text("signature_by_rotated_key"), &body).await.expect("the new key verifies");
    assert_eq!(store.fetches(), 2);

    // A burst of forgeries right after: each refused, none fetches again (rate-limited).
    let (head, sig) =
        text("signature").split_once("..").map(|(h, s)| (h.to_string(), s.to_string())).expect("detached");
    let forged = format!("{head}..{}{}", if sig.starts_with('A') { "B" } else { "A" }, &sig[1..]);
    for _ in 0..10 {
        let refused = verify(&cache, &api_url, &forged, &body).await;
        assert!(matches!(refused, Err(VerifyError::Signature(SignatureError::Mismatch))), "{refused:?}");
    }
    assert_eq!(store.fetches(), 2, "forgeries do not turn into fetches");

    // A store that is down is a retryable error (Saleor retries on 5xx), not a refusal.
    let down = JwksCache::new(reqwest::Client::new(), Duration::from_millis(500));
    let port = cmp_testenv::free_port().expect("port");
    let unreachable = verify(&down, &format!("http://127.0.0.1:{port}/graphql/"), &text("signature"), &body).await;
    assert!(matches!(unreachable, Err(VerifyError::Jwks(_))), "{unreachable:?}");
}

/// The genuine deliveries of a real Saleor 3.21.69 store (`tests/vectors/saleor-3.21-deliveries/`).
fn genuine() -> Vec<(String, Vec<u8>, String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/saleor-3.21-deliveries");
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).expect("the index");
    index
        .lines()
        .skip(1)
        .map(|line| {
            let file = line.split('\t').next().expect("a file name").to_string();
            let body = std::fs::read(dir.join(format!("{file}.body"))).expect("the body");
            let headers: Value =
                serde_json::from_slice(&std::fs::read(dir.join(format!("{file}.json"))).expect("the headers"))
                    .expect("JSON");
            let header = |name: &str| headers["headers"][name].as_str().expect(name).to_string();
            (file, body, header("Saleor-Signature"), header("Saleor-Api-Url"))
        })
        .collect()
}

fn genuine_jwks(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/saleor-3.21-deliveries").join(name);
    serde_json::from_slice(&std::fs::read(path).expect("the JWKS")).expect("JSON")
}

#[test]
fn every_genuine_saleor_delivery_verifies_over_its_bytes_and_none_after_a_change() {
    let deliveries = genuine();
    assert_eq!(deliveries.len(), 61);
    let (key1, key2) = (genuine_jwks("jwks-key1.json"), genuine_jwks("jwks-key2.json"));
    let mut by_key = [0, 0];
    for (file, body, signature, api_url) in &deliveries {
        assert_eq!(api_url, "http://127.0.0.1:9000/graphql/");
        let first = check(signature, body, &key1);
        let second = check(signature, body, &key2);
        match (&first, &second) {
            (Ok(()), _) => by_key[0] += 1,
            (Err(SignatureError::UnknownKid(_)), Ok(())) => by_key[1] += 1,
            other => panic!("{file}: {other:?}"),
        }
        let jwks = if first.is_ok() { &key1 } else { &key2 };
        let mut changed = body.clone();
        let at = changed.len() / 2;
        changed[at] ^= 0x01;
        assert_eq!(check(signature, &changed, jwks), Err(SignatureError::Mismatch), "{file}: a changed byte");
        let mut appended = body.clone();
        appended.push(b'\n');
        assert_eq!(check(signature, &appended, jwks), Err(SignatureError::Mismatch), "{file}: a trailing newline");
    }
    assert_eq!(by_key, [53, 8], "53 signed before the rotation, 8 after");
}

#[tokio::test]
async fn a_genuine_delivery_by_a_rotated_key_is_unknown_until_the_store_serves_the_key_then_verifies() {
    let deliveries = genuine();
    let (_, body, signature, _) = deliveries.iter().find(|(f, ..)| f == "0055-order_fully_paid").expect("0055");
    let store = JwksServer::start(genuine_jwks("jwks-key1.json")).await.expect("the JWKS is served");
    let cache = JwksCache::new(reqwest::Client::new(), Duration::from_millis(300));
    let Ok(Signature::Jws { header, encoded_header, signature }) = parse(Some(signature)) else { panic!("a JWS") };
    let verify = || cache.verify(store.api_url(), &header, &encoded_header, &signature, body);

    // Signed by the new key while the store still serves the old JWKS: unknown (the webhook answers 503), fetched once.
    assert!(matches!(verify().await, Err(VerifyError::Signature(SignatureError::UnknownKid(_)))));
    assert!(matches!(verify().await, Err(VerifyError::Signature(SignatureError::UnknownKid(_)))));
    assert_eq!(store.fetches(), 1, "a second try within the refetch interval fetches nothing");
    // The store serves the new key: the next try past the interval fetches it and verifies.
    store.set(genuine_jwks("jwks-key2.json"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    verify().await.expect("verifies with the rotated key");
    assert_eq!(store.fetches(), 2);
}
