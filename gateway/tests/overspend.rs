//! The credit invariant with real replicas: 64 concurrent callers spend one
//! Wallet through 3 gateway processes to a real lfx runtime, with demand far
//! over the balance. The runs admitted never exceed the balance, and the
//! Wallet's meters record exactly the runs admitted. With one replica
//! killed by SIGKILL mid-way, the Wallet is still never overspent, the dead
//! replica's lease comes back when it expires, and what is lost is its
//! unflushed spending only.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use cmp_testenv::lfx::Lfx;
use cmp_testenv::process::TestProcess;
use serde_json::json;
use support::{Gateway, RUNTIME_KEY, World, converge};

const BALANCE: i64 = 200;
const CALLERS: usize = 64;
/// Flags that make leases short, so a dead replica's lease comes back within seconds.
const FAST_LEASES: [&str; 6] = ["--lease-seconds", "2", "--idle-seconds", "1", "--flush-ms", "500"];

struct Spend {
    /// Runs answered 200, per replica.
    served: Vec<AtomicI64>,
    /// Replicas that stopped answering.
    dead: Vec<AtomicBool>,
}

/// One Organization with BALANCE credits and an Instance at 1 credit a run, on a fresh lfx.
async fn world(prefix: &str) -> (World, Lfx, TestProcess, String, String) {
    let w = World::new(prefix).await;
    let dir = std::env::temp_dir().join(format!("{}-lfx", w.run));
    let lfx = Lfx::start(&dir, RUNTIME_KEY).await.expect("lfx starts");
    let operator = w.operator();
    let offering = format!("{}-echo", w.run);
    let plans = json!([{"id": "basic", "creditsPerRun": 1, "requestsPerMinute": 1000000, "timeoutSeconds": 5}]);
    w.offering(&offering, "v2", lfx.url(), plans).await;
    let org = format!("{}-a", w.run);
    w.organization(&org, BALANCE).await;
    let key = w.instance(&org, "bot", &offering, "basic", json!([{"name": "main"}])).await.remove(0).1;
    (w, lfx, operator, org, key)
}

/// Callers spread over the replicas until each has been refused by every
/// live replica in a row; `midway` runs once `BALANCE / 3` runs were served.
async fn spend(w: &World, gateways: &[Gateway], key: &str, midway: impl FnOnce() + Send) -> Arc<Spend> {
    let spend = Arc::new(Spend {
        served: gateways.iter().map(|_| AtomicI64::new(0)).collect(),
        dead: gateways.iter().map(|_| AtomicBool::new(false)).collect(),
    });
    let bases: Arc<Vec<String>> = Arc::new(gateways.iter().map(|g| g.base.clone()).collect());
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let (spend, bases, http, key) = (spend.clone(), bases.clone(), w.http.clone(), key.to_string());
        callers.push(tokio::spawn(async move {
            let mut refused_in_a_row = 0;
            let mut turn = caller;
            while refused_in_a_row < 2 * bases.len() {
                turn += 1;
                let replica = turn % bases.len();
                if spend.dead[replica].load(Ordering::SeqCst) {
                    continue;
                }
                let answer = http
                    .post(format!("{}/v1/runs", bases[replica]))
                    .header("x-api-key", &key)
                    .json(&json!({"input_value": "spend"}))
                    .send()
                    .await;
                match answer.map(|a| a.status().as_u16()) {
                    Ok(200) => {
                        spend.served[replica].fetch_add(1, Ordering::SeqCst);
                        refused_in_a_row = 0;
                    }
                    Ok(402) => refused_in_a_row += 1,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(_) => spend.dead[replica].store(true, Ordering::SeqCst),
                }
            }
        }));
    }
    let watcher = spend.clone();
    let mut midway = Some(midway);
    while callers.iter().any(|c| !c.is_finished()) {
        let served: i64 = watcher.served.iter().map(|s| s.load(Ordering::SeqCst)).sum();
        if served >= BALANCE / 3
            && let Some(act) = midway.take()
        {
            act();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for caller in callers {
        caller.await.expect("a caller");
    }
    spend
}

/// Once the leases came back, one caller sweeps what is left, until every live replica refuses.
async fn sweep(w: &World, gateways: &[Gateway], key: &str, spend: &Spend) {
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut refused_in_a_row = 0;
    let mut turn = 0;
    while refused_in_a_row < 3 * gateways.len() {
        turn += 1;
        let replica = turn % gateways.len();
        if spend.dead[replica].load(Ordering::SeqCst) {
            continue;
        }
        let status = gateways[replica].post(&w.http, "/v1/runs", key, &json!({"input_value": "sweep"})).await.status();
        if status == 200 {
            spend.served[replica].fetch_add(1, Ordering::SeqCst);
            refused_in_a_row = 0;
        } else {
            refused_in_a_row += 1;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_callers_through_three_replicas_never_spend_more_than_the_balance() {
    let (w, _lfx, _operator, org, key) = world("gw-spend").await;
    let mut gateways = Vec::new();
    for replica in ["gw-0", "gw-1", "gw-2"] {
        gateways.push(w.gateway(replica, &FAST_LEASES).await);
    }
    let spend = spend(&w, &gateways, &key, || {}).await;
    sweep(&w, &gateways, &key, &spend).await;
    let served: Vec<i64> = spend.served.iter().map(|s| s.load(Ordering::SeqCst)).collect();
    let total: i64 = served.iter().sum();
    println!("served per replica {served:?}, {total} of {BALANCE} credits");
    assert!(total <= BALANCE, "admitted {total} > balance {BALANCE}");
    for gateway in &mut gateways {
        assert!(gateway.process.terminate().expect("stops").success());
    }
    let wallet = w.wallets(&org).get(&org).await.expect("the Wallet").status.expect("a status");
    let recorded: i64 = wallet.meters.iter().map(|m| m.consumed).sum();
    assert_eq!(recorded, total, "the meters record exactly the runs admitted");
    assert_eq!(total, BALANCE, "every credit was spendable: none stranded in a lease");
    assert!(wallet.meters.iter().all(|m| m.lease == 0), "every lease handed back on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_way_loses_only_its_unflushed_spending_and_its_lease_comes_back() {
    let (w, _lfx, _operator, org, key) = world("gw-kill").await;
    let mut gateways = Vec::new();
    for replica in ["gw-0", "gw-1", "gw-2"] {
        gateways.push(w.gateway(replica, &FAST_LEASES).await);
    }
    let victim_pid = gateways[2].process.pid();
    let spend = spend(&w, &gateways, &key, move || {
        let _ = std::process::Command::new("kill").args(["-KILL", &victim_pid.to_string()]).status();
    })
    .await;
    assert!(spend.dead[2].load(Ordering::SeqCst), "the killed replica stopped answering");
    // Meter names are the replica's name and a suffix per process start.
    let victim_meter = "gw-2-".to_string();
    converge("the killed replica's lease to expire", || async {
        let wallet = w.wallets(&org).get(&org).await.ok()?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let meter = wallet.status?.meters.into_iter().find(|m| m.name.starts_with(&victim_meter))?;
        meter.lease_expires_at.is_none_or(|t| t.0 <= now).then_some(())
    })
    .await;
    sweep(&w, &gateways, &key, &spend).await;
    for gateway in &mut gateways[..2] {
        assert!(gateway.process.terminate().expect("stops").success());
    }
    let served: Vec<i64> = spend.served.iter().map(|s| s.load(Ordering::SeqCst)).collect();
    let total: i64 = served.iter().sum();
    let wallet = w.wallets(&org).get(&org).await.expect("the Wallet").status.expect("a status");
    let recorded: i64 = wallet.meters.iter().map(|m| m.consumed).sum();
    let victim_recorded: i64 =
        wallet.meters.iter().filter(|m| m.name.starts_with(&victim_meter)).map(|m| m.consumed).sum();
    // Runs the killed replica answered but never recorded (its unflushed
    // spending); a run it recorded may also have died with it unanswered.
    let unrecorded = (served[2] - victim_recorded).max(0);
    println!(
        "served per replica {served:?}; the killed replica answered {} and recorded {victim_recorded}; Wallet consumed {recorded} of {BALANCE}",
        served[2]
    );
    assert!(recorded <= BALANCE, "the Wallet is never overspent: {recorded} > {BALANCE}");
    assert_eq!(recorded, BALANCE, "the dead replica's lease came back and was spent by the others");
    assert!(
        total <= BALANCE + unrecorded,
        "admitted {total}: beyond the balance only the dead replica's unflushed runs"
    );
}
