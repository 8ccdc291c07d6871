use super::*;
use proptest::prelude::*;
use serde_json::json;

const T0: i64 = 1_800_000_000;
const TIMEOUT: Duration = Duration::from_secs(10);

fn at_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(T0 * 1000 + ms).expect("a valid time")
}

fn wallet(granted: i64) -> Wallet {
    serde_json::from_value(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Wallet",
        "metadata": {"name": "acme", "namespace": "cmp-acme", "resourceVersion": "1"},
        "spec": {"grants": [{"id": "starter", "credits": granted, "source": "Starter"}]},
    }))
    .expect("a valid Wallet")
}

fn land(wallet: &mut Wallet, meter: &Meter) {
    let status = wallet.status.get_or_insert_with(Default::default);
    status.meters.retain(|m| m.name != meter.name);
    status.meters.push(meter.clone());
}

#[test]
fn nothing_is_admitted_without_a_lease() {
    let mut ledger = Ledger::default();
    assert_eq!(ledger.reserve(1, TIMEOUT, at_ms(0)), None);
    assert!(ledger.wanting(), "the refused run asks for a lease");
    assert_eq!(ledger.due(&LeasePolicy::default(), at_ms(0)), Some(2), "twice what the run needs");
}

#[test]
fn a_lease_admits_runs_up_to_its_size_and_settles_what_they_cost() {
    let policy = LeasePolicy::default();
    let mut ledger = Ledger::default();
    let mut w = wallet(10);
    let write = ledger.plan(&w, "r1", 4, &policy, at_ms(0));
    assert_eq!((write.meter.lease, write.free), (4, 10));
    land(&mut w, &write.meter);
    ledger.written(&write);
    let runs: Vec<_> = (0..4).filter_map(|_| ledger.reserve(1, TIMEOUT, at_ms(10))).collect();
    assert_eq!(runs.len(), 4);
    assert_eq!(ledger.reserve(1, TIMEOUT, at_ms(10)), None, "the lease is used up");
    let mut runs = runs.into_iter();
    ledger.settle(runs.next().expect("a run"), 0, at_ms(20));
    assert_eq!(ledger.spendable(at_ms(20), TIMEOUT), 1, "a run that cost nothing gives its credits back");
    for run in runs {
        ledger.settle(run, 1, at_ms(30));
    }
    let flush = ledger.plan(&w, "r1", 1, &policy, at_ms(1100));
    assert_eq!((flush.meter.consumed, flush.meter.runs, flush.flushed), (3, 4, 3));
    assert_eq!(flush.free, 7, "10 granted, 3 consumed, no other lease");
}

#[test]
fn another_replicas_live_lease_is_not_free_but_an_expired_one_is() {
    let policy = LeasePolicy { base_ttl: Duration::from_secs(5), ..LeasePolicy::default() };
    let mut w = wallet(10);
    let mut first = Ledger::default();
    let write = first.plan(&w, "r1", 6, &policy, at_ms(0));
    land(&mut w, &write.meter);
    assert_eq!(write.meter.lease, 5, "one replica takes at most half of what is free");
    let mut second = Ledger::default();
    assert_eq!(second.plan(&w, "r2", 100, &policy, at_ms(100)).free, 5);
    let mut third = Ledger::default();
    assert_eq!(third.plan(&w, "r3", 100, &policy, at_ms(5_000)).free, 10, "r1's lease expired and came back");
}

#[test]
fn a_folded_meter_is_not_counted_twice() {
    let policy = LeasePolicy::default();
    let mut w = wallet(10);
    let mut ledger = Ledger::default();
    let write = ledger.plan(&w, "r1", 4, &policy, at_ms(0));
    land(&mut w, &write.meter);
    ledger.written(&write);
    let run = ledger.reserve(3, TIMEOUT, at_ms(1)).expect("admitted");
    ledger.settle(run, 3, at_ms(2));
    let write = ledger.plan(&w, "r1", 0, &policy, at_ms(1_500));
    land(&mut w, &write.meter);
    ledger.written(&write);
    // The operator folds the meter into the compacted total.
    let status = w.status.as_mut().expect("a status");
    status.meters.clear();
    status.compacted = Some(cmp_crds::wallet::CompactedUsage { consumed: 3, runs: 1, meters: vec!["r1".into()] });
    let write = ledger.plan(&w, "r1", 2, &policy, at_ms(3_000));
    assert_eq!((write.meter.consumed, write.free), (0, 7), "the fold holds the 3 credits, the meter starts over");
}

#[test]
fn while_a_write_is_in_flight_admission_stays_within_both_leases() {
    let policy = LeasePolicy::default();
    let mut w = wallet(100);
    let mut ledger = Ledger::default();
    let write = ledger.plan(&w, "r1", 10, &policy, at_ms(0));
    land(&mut w, &write.meter);
    ledger.written(&write);
    // A write that hands the lease back is in flight...
    let back = ledger.plan(&w, "r1", 0, &policy, at_ms(10));
    assert_eq!(back.meter.lease, 0);
    // ...so no run may start on the old lease, which may be gone once it lands.
    assert_eq!(ledger.reserve(1, TIMEOUT, at_ms(11)), None);
    ledger.failed();
    assert!(ledger.reserve(1, TIMEOUT, at_ms(12)).is_some(), "the old lease holds again once the write failed");
}

#[test]
fn a_run_longer_than_the_lease_has_left_waits_for_a_renewal() {
    let policy = LeasePolicy { base_ttl: Duration::from_secs(5), ..LeasePolicy::default() };
    let mut w = wallet(100);
    let mut ledger = Ledger::default();
    let write = ledger.plan(&w, "r1", 10, &policy, at_ms(0));
    land(&mut w, &write.meter);
    ledger.written(&write);
    assert!(ledger.reserve(1, Duration::from_secs(2), at_ms(0)).is_some());
    assert_eq!(ledger.reserve(1, Duration::from_secs(60), at_ms(0)), None, "a 60 s run cannot finish inside the lease");
}

#[test]
fn a_replica_that_dies_loses_exactly_its_unflushed_spending() {
    let policy = LeasePolicy { base_ttl: Duration::from_secs(5), ..LeasePolicy::default() };
    let mut w = wallet(10);
    let mut dying = Ledger::default();
    let write = dying.plan(&w, "dying", 4, &policy, at_ms(0));
    land(&mut w, &write.meter);
    dying.written(&write);
    for _ in 0..3 {
        let run = dying.reserve(1, Duration::from_secs(1), at_ms(10)).expect("admitted");
        dying.settle(run, 1, at_ms(20));
    }
    // SIGKILL: the 3 credits spent were never written. Once its lease ends, it is free again.
    let mut survivor = Ledger::default();
    let write = survivor.plan(&w, "survivor", 100, &policy, at_ms(5_000));
    assert_eq!(write.free, 10, "the dead replica's lease came back; its 3 unflushed credits are lost, no more");
}

#[derive(Debug, Clone)]
enum Step {
    Run { replica: usize, credits: i64 },
    Settle { replica: usize, charge_all: bool },
    Plan { replica: usize, want: i64, stale: bool },
    Land { replica: usize },
    Tick { ms: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 1..4i64).prop_map(|(replica, credits)| Step::Run { replica, credits }),
        3 => (0..3usize, any::<bool>()).prop_map(|(replica, charge_all)| Step::Settle { replica, charge_all }),
        2 => (0..3usize, 0..40i64, any::<bool>()).prop_map(|(replica, want, stale)| Step::Plan { replica, want, stale }),
        2 => (0..3usize).prop_map(|replica| Step::Land { replica }),
        1 => (0..3_000i64).prop_map(|ms| Step::Tick { ms }),
    ]
}

struct Replica {
    ledger: Ledger,
    runs: Vec<(Reservation, i64)>,
    write: Option<(MeterWrite, u64)>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// Three replicas, any interleaving of runs, settlements, stale reads,
    /// racing writes and time: the credits admitted never exceed the grants.
    #[test]
    fn credits_admitted_never_exceed_the_balance(granted in 1..60i64, steps in prop::collection::vec(step(), 1..300)) {
        let policy = LeasePolicy { base_ttl: Duration::from_secs(3), ..LeasePolicy::default() };
        let mut server = (wallet(granted), 1u64);
        let mut previous = server.clone();
        let mut replicas: Vec<Replica> = (0..3).map(|_| Replica { ledger: Ledger::default(), runs: vec![], write: None }).collect();
        let (mut now, mut charged) = (0i64, 0i64);
        for step in steps {
            match step {
                Step::Run { replica, credits } => {
                    if let Some(r) = replicas[replica].ledger.reserve(credits, TIMEOUT, at_ms(now)) {
                        replicas[replica].runs.push((r, now));
                    }
                }
                Step::Settle { replica, charge_all } => {
                    if let Some((run, _)) = replicas[replica].runs.pop() {
                        let charge = if charge_all { run.credits } else { 0 };
                        charged += charge;
                        replicas[replica].ledger.settle(run, charge, at_ms(now));
                    }
                }
                Step::Plan { replica, want, stale } => {
                    let r = &mut replicas[replica];
                    if r.write.is_none() {
                        let (read, rv) = if stale { previous.clone() } else { server.clone() };
                        let write = r.ledger.plan(&read, &format!("r{replica}"), want, &policy, at_ms(now));
                        r.write = Some((write, rv));
                    }
                }
                Step::Land { replica } => {
                    if let Some((write, rv)) = replicas[replica].write.take() {
                        if rv == server.1 {
                            previous = server.clone();
                            land(&mut server.0, &write.meter);
                            server.1 += 1;
                            replicas[replica].ledger.written(&write);
                        } else {
                            replicas[replica].ledger.failed();
                        }
                    }
                }
                Step::Tick { ms } => {
                    // A live replica writes its spending before its lease ends
                    // (it renews at half the lease's life); one that cannot is
                    // the dead replica of the next test.
                    for (i, r) in replicas.iter_mut().enumerate() {
                        let ends = r.ledger.lease_expires_at.is_some_and(|end| end <= at_ms(now + ms));
                        if ends && r.ledger.unflushed > 0 {
                            if r.write.take().is_some() {
                                r.ledger.failed();
                            }
                            let write = r.ledger.plan(&server.0, &format!("r{i}"), 0, &policy, at_ms(now));
                            previous = server.clone();
                            land(&mut server.0, &write.meter);
                            server.1 += 1;
                            r.ledger.written(&write);
                        }
                    }
                    // Runs end by their timeout: settle (charging fully) those that would outlive it.
                    now += ms;
                    for r in &mut replicas {
                        let (late, on_time): (Vec<_>, Vec<_>) = r.runs.drain(..).partition(|(_, start)| now - start >= TIMEOUT.as_millis() as i64);
                        r.runs = on_time;
                        for (run, _) in late {
                            let credits = run.credits;
                            charged += credits;
                            r.ledger.settle(run, credits, at_ms(now - 1));
                        }
                    }
                }
            }
            let in_flight: i64 = replicas.iter().flat_map(|r| r.runs.iter()).map(|(run, _)| run.credits).sum();
            prop_assert!(charged + in_flight <= granted, "admitted {} + {} > granted {}", charged, in_flight, granted);
        }
    }
}

#[test]
fn leases_grow_with_the_spending_rate() {
    let policy = LeasePolicy::default();
    let mut ledger = Ledger::default();
    let w = wallet(1_000_000);
    let write = ledger.plan(&w, "r1", 10_000, &policy, at_ms(0));
    ledger.written(&write);
    // 10,000 credits a second for half a second.
    for i in 0..500 {
        let run = ledger.reserve(10, TIMEOUT, at_ms(i)).expect("admitted");
        ledger.settle(run, 10, at_ms(i + 1));
    }
    let want = ledger.due(&policy, at_ms(501)).expect("a write is due");
    assert!(want >= 40_000, "5 s of 10,000 credits/s, not {want}");
}
