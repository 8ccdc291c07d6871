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
    let venv = cmp_testenv::lfx::python_venv("pyjwt", cmp_testenv::saleor::PYJWT).expect("PyJWT installs");
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
