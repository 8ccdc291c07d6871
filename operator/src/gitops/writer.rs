//! The one task that owns a repository's clone. Reconcilers hand it edits
//! through a channel and read back what became of them; they never touch git.
//!
//! A batch: gather the edits that arrive close together (until 250 ms pass
//! without one, at most 1 s after the first was sent; the latest per folder wins), fetch
//! the remote head, build the tree from that head plus the edits, and, only if
//! the tree differs, commit once and push without force. A rejected push
//! (another writer got there first) starts the batch again on the new head,
//! with backoff; a clone that cannot be brought to the remote head is rebuilt.
//! No step waits without a bound and every failure lands on the Instances it
//! holds up, except lost races: while other writers keep winning the branch
//! (every refused push found the remote moved on), the batch is tried again
//! and split, and its Instances are told (`GitPushRejected`) only once that
//! has gone on for [`CONTENTION_GRACE`]. A refusal with the remote where it
//! was (a hook, a protected branch) is the remote's answer: it is reported at
//! once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use git2::{Oid, Signature};
use tokio::sync::{mpsc, oneshot};

use super::repo::{Blobs, Edit, Mirror, RepoError};
use prometheus_client::metrics::counter::Counter;

use super::{Delivery, GitOpsSettings, Published, Request};
use cmp_crds::conditions::reasons;

/// A batch gathers edits until none arrived for this long...
pub(super) const GATHER_QUIET: Duration = Duration::from_millis(250);
/// ...but a batch is closed at most this long after its first edit, so a steady stream still gets written.
pub(super) const GATHER_MAX: Duration = Duration::from_secs(1);
/// Backoff after a rejected push or an unreachable remote: from the first to the last, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_LAST: Duration = Duration::from_secs(10);
/// How long batches may keep losing races to other writers before their Instances say `GitPushRejected`:
/// a race lost and won again a moment later is not worth a status write and a Warning Event on every one.
pub const CONTENTION_GRACE: Duration = Duration::from_secs(30);

/// What the writer counts, read at once.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Commits pushed.
    pub commits: u64,
    /// Pushes the remote refused, each tried again on its new head.
    pub push_retries: u64,
    /// Times the clone was rebuilt.
    pub rebuilds: u64,
}

/// The writer's counters, exported as `cmp_operator_gitops_*_total` when registered.
#[derive(Default, Debug, Clone)]
pub struct Counters {
    /// Commits pushed.
    pub commits: Counter,
    /// Pushes the remote refused, each tried again on its new head.
    pub push_retries: Counter,
    /// Times the clone was rebuilt.
    pub rebuilds: Counter,
    /// Batches of edits that could not be pushed (each is tried again), by reason.
    pub failures: prometheus_client::metrics::family::Family<FailureLabels, Counter>,
}

/// The reason of a failed GitOps write: `GitUnreachable`, `GitPushRejected` or `RenderFailed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct FailureLabels {
    /// The condition reason the Instances waiting on it get.
    pub reason: &'static str,
}

impl Counters {
    /// Registers them in `registry` (the operator's, prefix `cmp_operator`).
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let counters = Self::default();
        registry.register("gitops_commits", "Commits the GitOps writer pushed", counters.commits.clone());
        registry.register(
            "gitops_push_retries",
            "Pushes the remote refused because it moved, each built again on its new head",
            counters.push_retries.clone(),
        );
        registry.register(
            "gitops_clone_rebuilds",
            "Times the writer's clone was deleted and fetched again",
            counters.rebuilds.clone(),
        );
        registry.register(
            "gitops_push_failures",
            "Batches of GitOps edits that could not be written or pushed (each tried again), by reason (GitUnreachable, GitPushRejected, RenderFailed)",
            counters.failures.clone(),
        );
        for reason in [reasons::GIT_UNREACHABLE, reasons::GIT_PUSH_REJECTED, reasons::RENDER_FAILED] {
            let _ = counters.failures.get_or_create(&FailureLabels { reason });
        }
        counters
    }

    /// Their values now.
    pub fn read(&self) -> Counts {
        Counts { commits: self.commits.get(), push_retries: self.push_retries.get(), rebuilds: self.rebuilds.get() }
    }
}

/// One edit with who is waiting for it.
struct Pending {
    edit: Edit,
    /// `<namespace>/<name>` and generation of the Instance (none for a Project's removal).
    instance: Option<(String, i64)>,
    digest: String,
    done: Vec<oneshot::Sender<Result<Oid, String>>>,
}

/// Runs the writer until every sender is dropped: once what it holds is written, or at once when that fails.
pub async fn run(
    settings: GitOpsSettings,
    mut requests: mpsc::UnboundedReceiver<Request>,
    published: Arc<Mutex<Published>>,
    wake: mpsc::UnboundedSender<String>,
) {
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut retry = RETRY_FIRST;
    let mut mirror: Option<Mirror> = None;
    // How many edits the next batch may hold: halved each time the remote refuses a whole batch, whether
    // other writers won every race (a big push takes longer between fetch and push than a small one) or a
    // hook refuses big pushes; unlimited again once the backlog has landed.
    let mut limit = usize::MAX;
    // Since when batches have been losing races to other writers (none: the last one did not).
    let mut contended_since: Option<tokio::time::Instant> = None;
    loop {
        if pending.is_empty() {
            let Some(request) = requests.recv().await else { return };
            let mut window = GatherWindow::opened_at(request.sent);
            absorb(&mut pending, request);
            loop {
                while let Ok(request) = requests.try_recv() {
                    window.arrived(request.sent);
                    absorb(&mut pending, request);
                }
                let Some(left) = window.left(tokio::time::Instant::now()) else { break };
                match tokio::time::timeout(left, requests.recv()).await {
                    Ok(Some(request)) => {
                        window.arrived(request.sent);
                        absorb(&mut pending, request);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        while let Ok(request) = requests.try_recv() {
            absorb(&mut pending, request);
        }
        let writing = tokio::time::Instant::now();
        let mut taken = take_batch(&mut pending, limit);
        let batch: Vec<Edit> = taken.values().map(|p| p.edit.clone()).collect();
        let batch_len = batch.len();
        let message = commit_message(taken.values());
        let attempt = {
            let settings = settings.clone();
            let taken = mirror.take();
            let known = published.clone();
            let is_known =
                move |oid: Oid| known.lock().unwrap_or_else(PoisonError::into_inner).positions.contains_key(&oid);
            tokio::task::spawn_blocking(move || write_batch(&settings, taken, &batch, &message, is_known)).await
        };
        let (kept, outcome) = match attempt {
            Ok(result) => result,
            Err(panic) => (None, Err((RepoError::Write(format!("the git task failed: {panic}")), Tries::default()))),
        };
        mirror = kept;
        if let Ok(written) = &outcome {
            let commit = written.pushed.map_or_else(|| "none (no change)".to_string(), |c| c.to_string());
            let took_ms = u64::try_from(writing.elapsed().as_millis()).unwrap_or(u64::MAX);
            tracing::info!(edits = batch_len, %commit, retries = written.rejected, took_ms, "batch written");
        }
        let refused = matches!(outcome, Err((RepoError::Rejected { .. }, _)));
        let outraced = matches!(&outcome, Err((_, tries)) if tries.outraced);
        let contended_for = if outraced {
            contended_since.get_or_insert_with(tokio::time::Instant::now).elapsed()
        } else {
            contended_since = None;
            Duration::ZERO
        };
        let failed = {
            let mut state = published.lock().unwrap_or_else(PoisonError::into_inner);
            record(&mut state, &wake, &mut taken, outcome, tells_instances(outraced, contended_for))
        };
        // What did not land goes back, to be tried with whatever arrived meanwhile.
        pending.append(&mut taken);
        limit = match (failed, refused) {
            // The backlog of a split batch drains at the size that landed; then batches are whole again.
            (false, _) if pending.is_empty() => usize::MAX,
            (false, _) => limit,
            (true, true) => {
                let halved = (batch_len / 2).max(1);
                tracing::warn!(
                    edits = batch_len,
                    next = halved,
                    "the remote refused every push of this batch; splitting it"
                );
                halved
            }
            (true, false) => limit,
        };
        if failed && requests.is_closed() {
            // Nobody can ask for or read these edits any more (the operator is stopping): the next
            // process renders them again from the CRs. Trying on would only keep calling the remote.
            tracing::info!(edits = pending.len(), "the writer stops with edits unwritten: its handle is gone");
            return;
        }
        if failed {
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_LAST);
        } else {
            retry = RETRY_FIRST;
        }
    }
}

/// When a batch being gathered closes, from when its edits were sent (an
/// edit that waited in the channel while the previous batch was written has
/// used up that much of its window already).
#[derive(Debug, Clone, Copy)]
pub(super) struct GatherWindow {
    first: tokio::time::Instant,
    last: tokio::time::Instant,
}

impl GatherWindow {
    pub(super) fn opened_at(sent: tokio::time::Instant) -> Self {
        Self { first: sent, last: sent }
    }

    pub(super) fn arrived(&mut self, sent: tokio::time::Instant) {
        self.last = self.last.max(sent);
    }

    /// How long the batch may still wait for edits at `now`: [`GATHER_QUIET`]
    /// after the last edit, at most [`GATHER_MAX`] after the first; None once closed.
    pub(super) fn left(&self, now: tokio::time::Instant) -> Option<Duration> {
        let closes = (self.first + GATHER_MAX).min(self.last + GATHER_QUIET);
        Some(closes.saturating_duration_since(now)).filter(|left| !left.is_zero())
    }
}

/// Whether a failed batch's Instances are told: always, unless it lost races to other writers for less
/// than [`CONTENTION_GRACE`].
fn tells_instances(outraced: bool, contended_for: Duration) -> bool {
    !outraced || contended_for >= CONTENTION_GRACE
}

/// Publishes a batch's outcome: every waiting edit delivered, or, when `tell`, each Instance's failure.
/// True when it failed.
fn record(
    state: &mut Published,
    wake: &mpsc::UnboundedSender<String>,
    pending: &mut BTreeMap<String, Pending>,
    outcome: Result<Written, (RepoError, Tries)>,
    tell: bool,
) -> bool {
    match outcome {
        Ok(written) => {
            state.counters.commits.inc_by(u64::from(written.pushed.is_some()));
            state.counters.push_retries.inc_by(written.rejected);
            state.counters.rebuilds.inc_by(written.rebuilds);
            state.learn_history(&written.history, written.history_base);
            for (dir, p) in std::mem::take(pending) {
                let commit = written.last_change.get(&dir).copied().unwrap_or(written.head);
                finish(state, wake, p, Ok(commit));
            }
            false
        }
        Err((error, counts)) => {
            state.counters.push_retries.inc_by(counts.rejected);
            state.counters.rebuilds.inc_by(counts.rebuilds);
            let reason = match &error {
                RepoError::Unreachable { .. } | RepoError::Clone { .. } => reasons::GIT_UNREACHABLE,
                RepoError::Rejected { .. } => reasons::GIT_PUSH_REJECTED,
                RepoError::Write(_) => reasons::RENDER_FAILED,
            };
            state.counters.failures.get_or_create(&FailureLabels { reason }).inc();
            if !tell {
                tracing::info!(%error, edits = pending.len(), "other writers keep winning the branch; trying again");
                return true;
            }
            tracing::warn!(%error, reason, edits = pending.len(), "GitOps write failed; trying again");
            for p in pending.values() {
                if let Some((key, _)) = &p.instance {
                    state.deliveries.insert(
                        key.clone(),
                        Delivery::Failed { digest: p.digest.clone(), reason, message: error.to_string() },
                    );
                    let _ = wake.send(key.clone());
                }
            }
            true
        }
    }
}

/// The first `limit` pending edits (in folder order), taken out of `pending`.
fn take_batch(pending: &mut BTreeMap<String, Pending>, limit: usize) -> BTreeMap<String, Pending> {
    let rest = match pending.keys().nth(limit).cloned() {
        Some(first_left) => pending.split_off(&first_left),
        None => BTreeMap::new(),
    };
    std::mem::replace(pending, rest)
}

fn absorb(pending: &mut BTreeMap<String, Pending>, request: Request) {
    let Request { edit, instance, digest, done, .. } = request;
    let dir = edit.dir().to_string();
    let mut waiting = pending.remove(&dir).map(|p| p.done).unwrap_or_default();
    waiting.extend(done);
    pending.insert(dir, Pending { edit, instance, digest, done: waiting });
}

fn finish(state: &mut Published, wake: &mpsc::UnboundedSender<String>, p: Pending, result: Result<Oid, String>) {
    if let (Some((key, _)), Ok(commit)) = (&p.instance, &result) {
        let delivery = match p.edit {
            Edit::Put(_) => Delivery::Delivered { digest: p.digest.clone(), commit: commit.to_string() },
            Edit::Remove(_) | Edit::RemoveProject(_) => {
                Delivery::Removed { commit: if commit.is_zero() { String::new() } else { commit.to_string() } }
            }
        };
        state.deliveries.insert(key.clone(), delivery);
        if state.requested.get(key) == Some(&p.digest) {
            state.requested.remove(key);
        }
        let _ = wake.send(key.clone());
    }
    for waiter in p.done {
        let _ = waiter.send(result.clone().map_err(|e| e.to_string()));
    }
}

/// The commit message: how many Instances changed, then one line each with its generation.
fn commit_message<'a>(pending: impl Iterator<Item = &'a Pending>) -> String {
    let mut lines = Vec::new();
    for p in pending {
        let what = match (&p.edit, &p.instance) {
            (Edit::Put(_), Some((key, generation))) => format!("Instance {key} generation {generation}"),
            (Edit::Remove(_), Some((key, generation))) => format!("Instance {key} generation {generation} removed"),
            (Edit::RemoveProject(dir), _) => format!("Project folder {dir} removed"),
            (Edit::Remove(dir), None) => format!("folder {dir} removed"),
            (Edit::Put(tree), None) => format!("folder {}", tree.dir),
        };
        lines.push(what);
    }
    let count = lines.len();
    format!("cmp: {count} change{}\n\n{}\n", if count == 1 { "" } else { "s" }, lines.join("\n"))
}

/// What a written batch left behind.
struct Written {
    /// The remote head after the batch (the new commit, or the unchanged head).
    head: Oid,
    /// The commit pushed, if the tree changed.
    pushed: Option<Oid>,
    /// The commit that last changed each edited folder.
    last_change: HashMap<String, Oid>,
    /// The first-parent history the batch saw that was not known yet, newest first.
    history: Vec<Oid>,
    /// The known commit that history stopped at (none: it reached the first commit).
    history_base: Option<Oid>,
    rejected: u64,
    rebuilds: u64,
}

#[derive(Default)]
struct Tries {
    rejected: u64,
    rebuilds: u64,
    /// Every push was refused and every refusal found the remote moved on: other writers won each race.
    outraced: bool,
}

type BatchResult = (Option<Mirror>, Result<Written, (RepoError, Tries)>);

/// Fetch, build, commit and push one batch, retrying a rejected push on the new head a few times before giving up to the caller's backoff.
fn write_batch(
    settings: &GitOpsSettings,
    mirror: Option<Mirror>,
    edits: &[Edit],
    message: &str,
    known: impl Fn(Oid) -> bool,
) -> BatchResult {
    const ATTEMPTS: u32 = 8;
    let mut tries = Tries::default();
    let open = |m: Option<Mirror>| match m {
        Some(m) => Ok(m),
        None => Mirror::open(&settings.clone_dir, &settings.url, &settings.branch, settings.credentials.clone()),
    };
    let mut mirror = match open(mirror) {
        Ok(m) => m,
        Err(e) => return (None, Err((e, tries))),
    };
    // The files are the same on every head: written once, outside the window between fetch and push.
    // A clone that cannot take them (damaged) is for the fetch to find and rebuild; the build then writes them.
    let ahead = |mirror: &Mirror| {
        let writing = std::time::Instant::now();
        match mirror.write_blobs(edits) {
            Ok(blobs) => {
                tracing::debug!(edits = edits.len(), blobs_ms = writing.elapsed().as_millis(), "files written");
                blobs
            }
            Err(error) => {
                tracing::debug!(%error, "the clone did not take the files ahead; the build writes them");
                Blobs::default()
            }
        }
    };
    let mut blobs = ahead(&mirror);
    let mut pause = RETRY_FIRST;
    // The head the last refused push was built on, and what the remote said.
    let mut refused_on: Option<(Option<Oid>, String)> = None;
    for attempt in 0..ATTEMPTS {
        let fetching = std::time::Instant::now();
        let head = match mirror.fetch() {
            Ok(head) => head,
            Err(RepoError::Clone { .. }) if tries.rebuilds == 0 => {
                tracing::warn!(dir = %settings.clone_dir.display(), "the clone cannot reach the remote head; rebuilding it");
                tries.rebuilds += 1;
                mirror = match mirror.rebuild() {
                    Ok(m) => m,
                    Err(e) => return (None, Err((e, tries))),
                };
                blobs = ahead(&mirror);
                continue;
            }
            Err(e) => return (Some(mirror), Err((e, tries))),
        };
        tracing::debug!(fetch_ms = fetching.elapsed().as_millis(), "fetched");
        if let Some((before, said)) = refused_on.take()
            && before == head
        {
            // Refused with the remote where it was: a hook or a protection said no; asking again will not help.
            let message = format!("{said} (the branch did not move: the remote itself refuses this push)");
            let (url, branch) = (settings.url.clone(), settings.branch.clone());
            return (Some(mirror), Err((RepoError::Rejected { url, branch, message }, tries)));
        }
        let fetched = std::time::Instant::now();
        let step = || -> Result<Written, RepoError> {
            let (tree, _changed) = mirror.build(head, edits, &blobs)?;
            let built = fetched.elapsed();
            let author = Signature::new(&settings.author_name, &settings.author_email, &git2::Time::new(0, 0))
                .map_err(|e| RepoError::Write(e.message().to_string()))?;
            // An empty remote stays empty when the batch only removes what was never there.
            let unchanged = mirror.tree_of(head)? == Some(tree) || (head.is_none() && mirror.is_empty_tree(tree)?);
            let pushed = if unchanged {
                None
            } else {
                let commit = mirror.commit(head, tree, message, &author)?;
                let committed = fetched.elapsed();
                mirror.push(commit)?;
                tracing::debug!(
                    edits = edits.len(),
                    build_ms = built.as_millis(),
                    commit_ms = (committed - built).as_millis(),
                    push_ms = (fetched.elapsed() - committed).as_millis(),
                    "built, committed and pushed"
                );
                Some(commit)
            };
            let new_head = match pushed.or(head) {
                Some(oid) => oid,
                None if edits.iter().all(|e| !matches!(e, Edit::Put(_))) => {
                    // Nothing to remove on an empty branch: no commit names the removal.
                    let last_change = edits.iter().map(|e| (e.dir().to_string(), Oid::ZERO_SHA1)).collect();
                    let history = Vec::new();
                    return Ok(Written {
                        head: Oid::ZERO_SHA1,
                        pushed,
                        last_change,
                        history,
                        history_base: None,
                        rejected: 0,
                        rebuilds: 0,
                    });
                }
                None => return Err(RepoError::Write("the remote branch is empty and nothing was rendered".into())),
            };
            let pushed_at = std::time::Instant::now();
            let mut last_change = HashMap::new();
            for edit in edits {
                if let Edit::Put(_) = edit {
                    last_change.insert(edit.dir().to_string(), mirror.last_change(new_head, edit.dir())?);
                } else {
                    last_change.insert(edit.dir().to_string(), new_head);
                }
            }
            let (history, history_base) = mirror.history_since(new_head, &known)?;
            tracing::debug!(history_ms = pushed_at.elapsed().as_millis(), "read what each folder's last change is");
            Ok(Written { head: new_head, pushed, last_change, history, history_base, rejected: 0, rebuilds: 0 })
        };
        match step() {
            Ok(mut written) => {
                written.rejected = tries.rejected;
                written.rebuilds = tries.rebuilds;
                return (Some(mirror), Ok(written));
            }
            Err(RepoError::Rejected { message, .. }) if attempt + 1 < ATTEMPTS => {
                tries.rejected += 1;
                refused_on = Some((head, message));
                tracing::info!(attempt, "the remote refused the push; fetching to see whether another writer moved on");
                std::thread::sleep(pause + jitter(pause));
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e @ RepoError::Rejected { .. }) => {
                tries.outraced = true;
                return (Some(mirror), Err((e, tries)));
            }
            Err(e) => return (Some(mirror), Err((e, tries))),
        }
    }
    (Some(mirror), Err((RepoError::Write("unreachable: the retry loop ended".into()), tries)))
}

/// Up to half of `pause`, so two writers that collided do not collide again in step.
fn jitter(pause: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    pause.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests;
