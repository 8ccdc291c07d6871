//! Rate limits across replicas: three real gateway processes find each
//! other through their Leases and share each key's demand, so a key
//! offered 20 runs a second, spread over all three, gets its plan's 120 a
//! minute in total (one minute's burst, then 2 a second), within 10%, as if
//! one replica served it. Runtime: the `LangflowStandIn` (fast, so the
//! runtime never limits the rate).

mod support;

use std::time::{Duration, Instant};

use cmp_testenv::free_port;
use serde_json::json;
use support::{OnStandIn, refusal};

#[tokio::test]
async fn three_replicas_together_hold_the_plans_rate() {
    let plans = json!([{"id": "basic", "creditsPerRun": 1, "requestsPerMinute": 120}]);
    let OnStandIn { w, key, runtime: _runtime, operator: _operator, .. } =
        OnStandIn::start("gw-rate", plans, 100_000).await;
    let mut gateways = Vec::new();
    for replica in ["gw-0", "gw-1", "gw-2"] {
        let peer = format!("127.0.0.1:{}", free_port().expect("a free port"));
        let flags = ["--peer-addr", &peer, "--namespace", "default", "--peer-group", &w.run];
        gateways.push(w.gateway(replica, &flags).await);
    }
    // Give the replicas a moment to see each other's Leases.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (start, mut admitted, mut limited) = (Instant::now(), 0, 0);
    for i in 0..400u32 {
        let due = start + Duration::from_millis(50 * u64::from(i));
        tokio::time::sleep_until(due.into()).await;
        let answer = gateways[i as usize % 3].post(&w.http, "/v1/runs", &key, &json!({"input_value": "r"})).await;
        match answer.status().as_u16() {
            200 => admitted += 1,
            _ => {
                assert_eq!(refusal(answer).await, (429, "rate_limited".into()));
                limited += 1;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let expected = 120.0 + 2.0 * seconds;
    println!(
        "3 replicas admitted {admitted} and limited {limited} in {seconds:.1} s; one replica would admit {expected:.0}"
    );
    let off = (f64::from(admitted) - expected).abs() / expected;
    assert!(off <= 0.10, "{admitted} admitted, {expected:.0} expected: off by {:.1}%", off * 100.0);
    for gateway in &mut gateways {
        assert!(gateway.process.terminate().expect("stops").success());
    }
}
