//! `cargo xtask bench-webhook`: signed paid orders through the real webhook,
//! operator, API server and lfx runtime, on a fresh local control plane.
//! Prints:
//! - signature verifications per second (the webhook's verifier, release
//!   build) beside PyJWT verifying the same kind of signature in the same run;
//! - the webhook's own latency (p50, p95) for first deliveries and for
//!   redeliveries, beside a bare round trip to the same server (the manifest);
//! - p50 and p95 from a signed `ORDER_FULLY_PAID` being sent to its Instance
//!   being Ready (its flow registered in the runtime) with its API-key Secret
//!   written, and to the first successful run with that key through the real
//!   gateway (release build) to the real lfx runtime: time to first value.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cmp_crds::{Instance, Offering};
use cmp_testenv::saleor::SaleorStandIn;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::bench::{follow, operator_binary, percentile, plane_with_lfx, ready, release_binary, start_operator};

const RUNTIME_KEY: &str = "bench-runtime-key";
const SKU: &str = "BENCH-ECHO";

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!("p50 {:.1} ms, p95 {:.1} ms", ms(percentile(&samples, 0.5)), ms(percentile(&samples, 0.95)))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A paid order of one Echo plan by its own guest buyer.
fn order(i: usize) -> Vec<u8> {
    format!(
        "{{\"__typename\": \"OrderFullyPaid\", \"order\": {{\"id\": \"T3JkZXI6YmVuY2gt{i}\", \"number\": \"{i}\", \"status\": \"UNFULFILLED\", \"chargeStatus\": \"FULL\", \"userEmail\": \"buyer{i}@example.com\", \"user\": null, \"lines\": [{{\"id\": \"T3JkZXJMaW5lOmJlbmNoLXtpfQ{i}\", \"quantity\": 1, \"productSku\": \"{SKU}\", \"variant\": {{\"sku\": \"{SKU}\"}}}}]}}}}"
    )
    .into_bytes()
}

/// PyJWT verifying detached RS256 signatures for about two seconds: the baseline.
fn pyjwt_verifications_per_second() -> anyhow::Result<f64> {
    let venv = cmp_testenv::saleor::pyjwt_venv()?;
    let script = format!(
        "{}\nimport time\npem, kid, public = key()\nbody = open(sys.argv[1], 'rb').read()\nsig = sign(body, pem, kid)\npub = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(public))\nn, t0 = 0, time.perf_counter()\nwhile time.perf_counter() - t0 < 2:\n    jwt.api_jws.decode_complete(sig, key=pub, algorithms=['RS256'], detached_payload=body)\n    n += 1\nprint(n / (time.perf_counter() - t0))",
        cmp_testenv::saleor::PYJWT_KEYS
    );
    let body = std::env::temp_dir().join(format!("bench-webhook-body-{}.json", std::process::id()));
    std::fs::write(&body, order(0))?;
    let out = std::process::Command::new(venv.join("bin/python")).args(["-c", &script]).arg(&body).output()?;
    anyhow::ensure!(out.status.success(), "PyJWT failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The webhook's verifier, built in release mode, for about two seconds.
async fn verifications_per_second(store: &SaleorStandIn, dir: &std::path::Path) -> anyhow::Result<f64> {
    let binary = release_binary("cmp-webhook-fuzz", "verify-rate").await?;
    let body = order(0);
    let jwks_url = cmp_webhook::jwks::jwks_url(store.api_url())?;
    let jwks: serde_json::Value = reqwest::get(jwks_url).await?.json().await?;
    let case = dir.join("verify-case.json");
    let body_text = String::from_utf8(body.clone())?;
    std::fs::write(
        &case,
        serde_json::to_vec(&json!({"jwks": jwks, "signature": store.sign(&body)?, "body": body_text}))?,
    )?;
    let out = tokio::process::Command::new(&binary).arg(&case).output().await?;
    anyhow::ensure!(out.status.success(), "verify-rate failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Runs the benchmark with `orders` paid orders, sent one after another.
pub async fn run(orders: usize) -> anyhow::Result<()> {
    let operator = operator_binary(None).await?;
    let webhook = release_binary("cmp-webhook", "cmp-webhook").await?;
    let gateway = release_binary("cmp-gateway", "cmp-gateway").await?;
    let (dir, plane, client, lfx) = plane_with_lfx(RUNTIME_KEY).await?;
    let (url, sha256) = cmp_testenv::lfx::example_flow("echo.json")?;
    let offering = json!({"apiVersion": Offering::api_version(&()), "kind": "Offering", "metadata": {"name": "echo"},
        "spec": {"displayName": "Echo", "runtime": {"mode": "Shared", "endpoint": lfx.url(),
                 "apiKeySecretRef": {"namespace": "default", "name": "bench-lfx", "key": "apiKey"}},
            "versions": [{"name": "1", "flowId": "echo", "artifact": {"url": url, "sha256": sha256}}],
            "plans": [{"id": "free", "creditsPerRun": 1, "includedCredits": 100, "saleorSku": SKU}]}});
    Api::<Offering>::all(client.clone())
        .patch("echo", &PatchParams::apply(crate::MANAGER), &Patch::Apply(offering))
        .await?;
    let (mut operator, _) = start_operator(&operator, &dir, &plane, &[]).await?;
    let store = SaleorStandIn::start().await?;
    let (port, health) = (cmp_testenv::free_port()?, cmp_testenv::free_port()?);
    let log = std::fs::File::create(dir.join("webhook.log"))?;
    let mut webhook = tokio::process::Command::new(&webhook)
        .env("KUBECONFIG", plane.kubeconfig())
        .args(["--saleor-addr", &format!("127.0.0.1:{port}"), "--health-addr", &format!("127.0.0.1:{health}")])
        .args(["--saleor-api-url", store.api_url()])
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting cmp-webhook")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    crate::bench::wait_for_metrics(health).await?;
    let (gw_port, gw_health) = (cmp_testenv::free_port()?, cmp_testenv::free_port()?);
    let gw_log = std::fs::File::create(dir.join("gateway.log"))?;
    let mut gateway = tokio::process::Command::new(&gateway)
        .env("KUBECONFIG", plane.kubeconfig())
        .args(["--addr", &format!("127.0.0.1:{gw_port}"), "--health-addr", &format!("127.0.0.1:{gw_health}")])
        .args(["--usage-file", &dir.join("usage.jsonl").display().to_string()])
        .stdout(gw_log.try_clone()?)
        .stderr(gw_log)
        .kill_on_drop(true)
        .spawn()
        .context("starting cmp-gateway")?;
    crate::bench::wait_for_metrics(gw_health).await?;

    eprintln!("signature verifications per second ...");
    let ours = verifications_per_second(&store, &dir).await?;
    let pyjwt = pyjwt_verifications_per_second()?;

    let (instances, _instances_task) = follow::<Instance>(&client);
    let (secrets, _secrets_task) = follow::<Secret>(&client);
    let mut bare = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        http.get(format!("{base}/saleor/manifest")).send().await?.error_for_status()?;
        bare.push(started.elapsed());
    }
    eprintln!("{orders} paid orders ...");
    let route = format!("{base}/saleor/webhooks/order-fully-paid");
    let (mut first, mut again, mut to_ready, mut to_run) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..orders {
        let body = order(i);
        let sent = Instant::now();
        let (status, answer) = store.deliver(&http, &route, "order_fully_paid", &body).await?;
        anyhow::ensure!(status == 200, "order {i} answered {status}: {answer}");
        first.push(sent.elapsed());
        let org = answer["organization"].as_str().unwrap_or_default().to_string();
        let name = answer["instances"][0].as_str().unwrap_or_default().to_string();
        let ns = cmp_crds::names::control_namespace(&org);
        let key = cmp_crds::names::key_secret_name(&name, "default");
        let deadline = sent + Duration::from_secs(120);
        loop {
            let instance = instances.get(&ObjectRef::new(&name).within(&ns));
            let is_ready = instance.is_some_and(|i| ready(i.status.as_ref().map(|s| &s.conditions)));
            let secret = secrets.get(&ObjectRef::new(&key).within(&ns));
            if is_ready && let Some(secret) = secret {
                to_ready.push(sent.elapsed());
                let plaintext = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(cmp_crds::names::KEY_SECRET_DATA_KEY))
                    .map(|v| String::from_utf8_lossy(&v.0).to_string())
                    .context("the key Secret holds no apiKey")?;
                first_run(&http, gw_port, &plaintext, deadline).await?;
                to_run.push(sent.elapsed());
                break;
            }
            if Instant::now() > deadline {
                bail!("Instance {ns}/{name} not Ready with its key within 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let sent = Instant::now();
        let (status, _) = store.deliver(&http, &route, "order_fully_paid", &body).await?;
        anyhow::ensure!(status == 200, "redelivery of order {i} answered {status}");
        again.push(sent.elapsed());
    }
    let _ = webhook.kill().await;
    let _ = gateway.kill().await;
    let _ = operator.kill().await;
    println!(
        "\nbench-webhook: {orders} signed ORDER_FULLY_PAID deliveries, one at a time, on a fresh control plane, 2 cores"
    );
    println!("  signature verifications/s     {ours:>10.0}   (PyJWT in the same run: {pyjwt:.0}/s)");
    println!("  webhook latency, first        {}", summary(first));
    println!("  webhook latency, redelivery   {}", summary(again));
    println!("  bare round trip (manifest)    {}", summary(bare));
    println!("  order sent -> Instance Ready with its key Secret: {}", summary(to_ready));
    println!("  order sent -> first successful run through the gateway (lfx): {}", summary(to_run));
    drop(plane);
    drop(lfx);
    Ok(())
}

/// Runs the agent with `key` through the gateway until it answers 200 (its
/// caches catch up with the new Instance and Wallet within milliseconds).
async fn first_run(http: &reqwest::Client, port: u16, key: &str, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let answer = http
            .post(format!("http://127.0.0.1:{port}/v1/runs"))
            .header("x-api-key", key)
            .json(&json!({"input_value": "hello"}))
            .send()
            .await?;
        if answer.status().is_success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "no successful run through the gateway within 2 minutes: {} {}",
                answer.status(),
                answer.text().await?
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
