//! Paying for runs: one [`Ledger`] per Wallet this replica serves, and one
//! task per Wallet that writes the replica's meter (server-side apply of its
//! own entry, under its own field manager, with the Wallet's
//! resourceVersion as a precondition). Runs reserve credits in memory; only
//! a run that finds the lease used up waits for the task's next write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cmp_crds::Wallet;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::directory::Directory;
use crate::ledger::{LeasePolicy, Ledger, MeterWrite, Reservation};
use crate::metrics::Metrics;
use crate::refusal::{Code, Refusal};

/// How often each Wallet's task looks at its ledger.
const TICK: Duration = Duration::from_millis(200);
/// Conflicting writes tried again at once (with a fresh read) before waiting a tick.
const CONFLICT_RETRIES: usize = 8;

/// What the last write attempt of a Wallet's meter came to.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    None,
    /// Written; `free` credits were there for this replica.
    Written {
        free: i64,
    },
    /// The write failed; why.
    Failed(String),
}

/// A Wallet: (namespace, name).
type WalletKey = (String, String);
/// An account and the task that writes its meter.
type AccountTask = (Arc<Account>, JoinHandle<()>);

struct Account {
    namespace: String,
    name: String,
    ledger: Mutex<Ledger>,
    wake: Notify,
    outcome: watch::Sender<Outcome>,
    /// The Wallet as our last write returned it (newer than the cache until the watch catches up).
    last_written: Mutex<Option<Wallet>>,
}

impl Account {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Credits held for one run; give it back with [`Credits::settle`].
pub struct Held {
    account: Arc<Account>,
    reservation: Reservation,
}

impl Held {
    /// The credits held.
    pub fn credits(&self) -> i64 {
        self.reservation.credits
    }
}

/// This replica's credit accounts.
pub struct Credits {
    client: kube::Client,
    directory: Directory,
    meter: String,
    field_manager: String,
    policy: LeasePolicy,
    lease_wait: Duration,
    metrics: Arc<Metrics>,
    accounts: Mutex<HashMap<WalletKey, AccountTask>>,
    closing: Arc<AtomicBool>,
}

impl Credits {
    /// Accounts whose meters are named `meter` (unique to this process).
    pub fn new(
        client: kube::Client,
        directory: Directory,
        meter: String,
        policy: LeasePolicy,
        lease_wait: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let field_manager = format!("cmp-gateway/{meter}");
        Arc::new(Self {
            client,
            directory,
            meter,
            field_manager,
            policy,
            lease_wait,
            metrics,
            accounts: Mutex::default(),
            closing: Arc::default(),
        })
    }

    fn account(self: &Arc<Self>, namespace: &str, name: &str) -> Arc<Account> {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (namespace.to_string(), name.to_string());
        if let Some((account, _)) = accounts.get(&key) {
            return account.clone();
        }
        let account = Arc::new(Account {
            namespace: namespace.to_string(),
            name: name.to_string(),
            ledger: Mutex::default(),
            wake: Notify::new(),
            outcome: watch::channel(Outcome::None).0,
            last_written: Mutex::default(),
        });
        let task = tokio::spawn(self.clone().write_meter(account.clone()));
        accounts.insert(key, (account.clone(), task));
        account
    }

    /// Holds `price` credits of Wallet `namespace/name` for a run that may
    /// last `timeout`: at once from the lease, or after the next meter
    /// write. 402 when the Wallet cannot pay, 503 when no lease could be written.
    pub async fn hold(
        self: &Arc<Self>,
        (namespace, name): (&str, &str),
        price: i64,
        timeout: Duration,
    ) -> Result<Held, Refusal> {
        let account = self.account(namespace, name);
        let mut outcomes = account.outcome.subscribe();
        let deadline = tokio::time::Instant::now() + self.lease_wait;
        loop {
            if let Some(reservation) = account.ledger().reserve(price, timeout, Timestamp::now()) {
                return Ok(Held { account: account.clone(), reservation });
            }
            account.wake.notify_one();
            match tokio::time::timeout_at(deadline, outcomes.changed()).await {
                Err(_) | Ok(Err(_)) => {
                    return Err(Refusal::new(
                        Code::CreditsUnverifiable,
                        format!(
                            "no credit lease on Wallet {namespace}/{name} could be taken in time; try again shortly"
                        ),
                    ));
                }
                Ok(Ok(())) => {}
            }
            let outcome = outcomes.borrow_and_update().clone();
            match outcome {
                Outcome::Written { free } if free < price => {
                    return Err(Refusal::new(
                        Code::InsufficientCredits,
                        format!(
                            "Wallet {namespace}/{name} cannot pay {price} credits for this run ({} available): top it up",
                            free.max(0)
                        ),
                    ));
                }
                Outcome::Failed(why) => {
                    return Err(Refusal::new(
                        Code::CreditsUnverifiable,
                        format!(
                            "the credits of Wallet {namespace}/{name} could not be checked ({why}); try again shortly"
                        ),
                    ));
                }
                Outcome::Written { .. } | Outcome::None => {}
            }
        }
    }

    /// Ends a run: `charged` credits (at most those held) are spent.
    pub fn settle(&self, held: Held, charged: i64) {
        let Held { account, reservation } = held;
        account.ledger().settle(reservation, charged, Timestamp::now());
        self.metrics.charged(charged);
    }

    /// Writes every meter one last time (spending recorded, leases handed
    /// back) and stops the tasks. Call once no run is in flight.
    pub async fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let accounts: Vec<_> = self.accounts.lock().unwrap_or_else(PoisonError::into_inner).drain().collect();
        for (_, (account, task)) in accounts {
            account.wake.notify_one();
            if let Err(error) = task.await {
                tracing::error!(%error, wallet = %account.name, "the meter task failed");
            }
        }
    }

    /// The task that writes this replica's meter of one Wallet.
    async fn write_meter(self: Arc<Self>, account: Arc<Account>) {
        loop {
            tokio::select! {
                () = account.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
            let closing = self.closing.load(Ordering::SeqCst);
            let now = Timestamp::now();
            let want = if closing { Some(0) } else { account.ledger().due(&self.policy, now) };
            if let Some(want) = want {
                self.write(&account, want).await;
            }
            if closing {
                tracing::info!(wallet = %account.name, namespace = %account.namespace, "final meter write done");
                return;
            }
        }
    }

    /// One write of the meter asking for a lease of `want`; a conflict reads the Wallet again and plans anew.
    async fn write(&self, account: &Account, want: i64) {
        let remaining = account.ledger().remaining();
        let kind = if want == 0 {
            "return"
        } else if want > remaining {
            "lease"
        } else {
            "flush"
        };
        let api = Api::<Wallet>::namespaced(self.client.clone(), &account.namespace);
        let mut wallet = self.freshest(account);
        for _ in 0..CONFLICT_RETRIES {
            let Some(current) = wallet.take() else {
                match api.get_opt(&account.name).await {
                    Ok(Some(read)) => {
                        wallet = Some(read);
                        continue;
                    }
                    Ok(None) => return self.failed(account, kind, format!("Wallet {} does not exist", account.name)),
                    Err(error) => return self.failed(account, kind, format!("reading the Wallet: {error}")),
                }
            };
            let write = account.ledger().plan(&current, &self.meter, want, &self.policy, Timestamp::now());
            match self.apply(&api, &current, &write).await {
                Ok(written) => {
                    account.ledger().written(&write);
                    *account.last_written.lock().unwrap_or_else(PoisonError::into_inner) = Some(written);
                    self.metrics.lease_write(kind, "written");
                    tracing::debug!(wallet = %account.name, lease = write.meter.lease, consumed = write.meter.consumed, free = write.free, "meter written");
                    account.outcome.send_replace(Outcome::Written { free: write.free });
                    return;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    account.ledger().failed();
                    self.metrics.lease_write(kind, "conflict");
                }
                Err(error) => {
                    account.ledger().failed();
                    return self.failed(account, kind, format!("writing the meter: {error}"));
                }
            }
        }
        self.failed(account, kind, format!("{CONFLICT_RETRIES} writes in a row lost to other writers"));
    }

    fn failed(&self, account: &Account, kind: &'static str, why: String) {
        self.metrics.lease_write(kind, "failed");
        tracing::warn!(wallet = %account.name, namespace = %account.namespace, reason = %why, "the meter could not be written");
        account.outcome.send_replace(Outcome::Failed(why));
    }

    /// The newer of the cached Wallet and the one our last write returned.
    fn freshest(&self, account: &Account) -> Option<Wallet> {
        let cached = self.directory.wallet(&account.namespace, &account.name).map(|w| (*w).clone());
        let ours = account.last_written.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let version = |w: &Wallet| w.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok());
        match (cached, ours) {
            (Some(c), Some(o)) if version(&o) > version(&c) => Some(o),
            (Some(c), _) => Some(c),
            (None, o) => o,
        }
    }

    async fn apply(&self, api: &Api<Wallet>, wallet: &Wallet, write: &MeterWrite) -> Result<Wallet, kube::Error> {
        let patch = json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Wallet",
            "metadata": {"name": wallet.metadata.name, "namespace": wallet.metadata.namespace,
                         "resourceVersion": wallet.metadata.resource_version},
            "status": {"meters": [write.meter]},
        });
        let name = wallet.metadata.name.clone().unwrap_or_default();
        api.patch_status(&name, &PatchParams::apply(&self.field_manager).force(), &Patch::Apply(patch)).await
    }
}
