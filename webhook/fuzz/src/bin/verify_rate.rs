//! Signature verifications per second of the webhook's verifier, in a
//! release build: `verify-rate <case.json>`, where the file holds
//! `{"jwks", "signature", "body"}`. Run by `cargo xtask bench-webhook`.

use cmp_webhook::signature::{Jwks, Signature, parse, verify_jws};

fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: verify-rate <case.json with jwks, signature and body>");
        return std::process::ExitCode::from(2);
    };
    let case: serde_json::Value = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(case) => case,
        Err(error) => {
            eprintln!("verify-rate: cannot read {path}: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let jwks: Jwks = match serde_json::from_value(case["jwks"].clone()) {
        Ok(jwks) => jwks,
        Err(error) => {
            eprintln!("verify-rate: {path} has no usable jwks: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let body = case["body"].as_str().unwrap_or_default().as_bytes().to_vec();
    let Ok(Signature::Jws { header, encoded_header, signature }) = parse(case["signature"].as_str()) else {
        eprintln!("verify-rate: {path} has no JWS signature");
        return std::process::ExitCode::FAILURE;
    };
    let (mut n, started) = (0u64, std::time::Instant::now());
    while started.elapsed() < std::time::Duration::from_secs(2) {
        if let Err(error) = verify_jws(&header, &encoded_header, &signature, &body, &jwks) {
            eprintln!("verify-rate: the signature does not verify: {error}");
            return std::process::ExitCode::FAILURE;
        }
        n += 1;
    }
    println!("{}", n as f64 / started.elapsed().as_secs_f64());
    std::process::ExitCode::SUCCESS
}
