//! GitOps delivery of Dedicated runtimes: the renderer (pure), the writer
//! task that owns the repository clone, and the handle reconcilers use to
//! hand it edits and read back what became of them.

pub mod argocd;
pub mod credentials;
pub mod render;
pub mod repo;
pub mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use git2::Oid;
use tokio::sync::{mpsc, oneshot};

use render::{InstanceTree, RenderSettings};
use repo::Edit;

pub use credentials::Credentials;

/// Where and how the writer commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitOpsSettings {
    /// The remote (`file:///...`, `https://...`).
    pub url: String,
    /// The branch Argo CD follows.
    pub branch: String,
    /// The writer's own clone (a bare mirror; rebuilt when unusable).
    pub clone_dir: PathBuf,
    /// Commit author.
    pub author_name: String,
    /// Commit author's e-mail.
    pub author_email: String,
    /// Credentials and trust for the remote, when it needs them.
    pub credentials: Option<Credentials>,
    /// What the renderer needs.
    pub render: RenderSettings,
    /// Argo CD, when it syncs the repository.
    pub argocd: Option<ArgoCdSettings>,
}

/// How Argo CD is told about each Project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgoCdSettings {
    /// The namespace of Argo CD (its Applications and AppProjects live there).
    pub namespace: String,
    /// The repository URL as Argo CD reaches it (often the same as the writer's).
    pub repo_url: String,
}

/// What became of an Instance's last edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The folder with this digest is on the remote; `commit` last changed it.
    Delivered { digest: String, commit: String },
    /// The folder was removed at `commit`.
    Removed { commit: String },
    /// The last attempt failed; the writer keeps trying.
    Failed { digest: String, reason: &'static str, message: String },
}

/// An edit on its way to the writer.
pub struct Request {
    edit: Edit,
    instance: Option<(String, i64)>,
    digest: String,
    done: Vec<oneshot::Sender<Result<Oid, String>>>,
    /// When it was sent: the writer's batches are timed from their edits' arrival, not from when it read them.
    sent: tokio::time::Instant,
}

/// What the writer publishes for reconcilers to read.
#[derive(Default)]
pub struct Published {
    /// By Instance key (`<namespace>/<name>`).
    deliveries: HashMap<String, Delivery>,
    /// Digests handed to the writer and not yet delivered, by Instance key (to send each edit once).
    requested: HashMap<String, String>,
    /// Position of each commit on the branch's first-parent history (0 = the first commit).
    positions: HashMap<Oid, u64>,
    /// What the writer counted.
    counters: writer::Counters,
}

impl Published {
    fn learn_history(&mut self, newest_first: &[Oid], base: Option<Oid>) {
        let first = base.and_then(|b| self.positions.get(&b)).map_or(0, |p| p + 1);
        for (position, oid) in (first..).zip(newest_first.iter().rev()) {
            self.positions.insert(*oid, position);
        }
    }
}

/// The reconcilers' handle on the writer.
pub struct GitOps {
    /// The settings.
    pub settings: GitOpsSettings,
    requests: mpsc::UnboundedSender<Request>,
    published: Arc<Mutex<Published>>,
    wakes: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

/// Why a removal could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub enum GitOpsError {
    /// The writer stopped.
    #[error("the GitOps writer stopped; the operator is shutting down")]
    Stopped,
    /// The writer did not confirm in time; it keeps trying.
    #[error("the GitOps writer has not pushed the removal of {dir} yet: {message}")]
    NotYet { dir: String, message: String },
}

impl GitOps {
    /// Starts the writer task for the repository.
    pub fn start(settings: GitOpsSettings) -> Self {
        Self::counted(settings, writer::Counters::default())
    }

    /// Starts the writer counting into `counters` (registered as metrics).
    pub fn counted(settings: GitOpsSettings, counters: writer::Counters) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        let (wake, wakes) = mpsc::unbounded_channel();
        let published = Arc::new(Mutex::new(Published { counters, ..Published::default() }));
        tokio::spawn(writer::run(settings.clone(), receiver, published.clone(), wake));
        Self { settings, requests, published, wakes: Mutex::new(Some(wakes)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The keys (`<namespace>/<name>`) of Instances whose delivery changed; taken once, by the Instance controller.
    pub fn take_wakes(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.wakes.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// What became of the Instance's last edit.
    pub fn delivery(&self, key: &str) -> Option<Delivery> {
        self.lock().deliveries.get(key).cloned()
    }

    /// Hands the writer an Instance's folder, unless this exact folder is already delivered or on its way.
    pub fn submit(&self, key: &str, generation: i64, tree: &InstanceTree) {
        let digest = tree.digest();
        {
            let mut state = self.lock();
            let delivered =
                matches!(state.deliveries.get(key), Some(Delivery::Delivered { digest: d, .. }) if *d == digest);
            if delivered || state.requested.get(key) == Some(&digest) {
                return;
            }
            state.requested.insert(key.to_string(), digest.clone());
        }
        let request = Request {
            edit: Edit::Put(tree.clone()),
            instance: Some((key.to_string(), generation)),
            digest,
            done: Vec::new(),
            sent: tokio::time::Instant::now(),
        };
        let _ = self.requests.send(request);
    }

    /// Removes a folder (an Instance's, with its key; or a Project's) and
    /// waits for the push, at most `wait`: the commit that removed it, or
    /// None when the branch was empty (nothing was there).
    pub async fn remove(
        &self,
        dir: &str,
        instance: Option<(String, i64)>,
        wait: std::time::Duration,
    ) -> Result<Option<String>, GitOpsError> {
        if let Some((key, _)) = &instance {
            if let Some(Delivery::Removed { commit }) = self.delivery(key) {
                return Ok(Some(commit).filter(|c| !c.is_empty()));
            }
            self.lock().requested.remove(key);
        }
        let (done, confirmed) = oneshot::channel();
        let edit = if instance.is_some() { Edit::Remove(dir.into()) } else { Edit::RemoveProject(dir.into()) };
        let request =
            Request { edit, instance, digest: String::new(), done: vec![done], sent: tokio::time::Instant::now() };
        self.requests.send(request).map_err(|_| GitOpsError::Stopped)?;
        match tokio::time::timeout(wait, confirmed).await {
            Ok(Ok(Ok(commit))) => Ok((!commit.is_zero()).then(|| commit.to_string())),
            Ok(Ok(Err(message))) => Err(GitOpsError::NotYet { dir: dir.into(), message }),
            Ok(Err(_)) => Err(GitOpsError::Stopped),
            Err(_) => Err(GitOpsError::NotYet { dir: dir.into(), message: format!("no answer within {wait:?}") }),
        }
    }

    /// Forgets an Instance once it is gone.
    pub fn forget(&self, key: &str) {
        let mut state = self.lock();
        state.deliveries.remove(key);
        state.requested.remove(key);
    }

    /// True when `revision` is `commit` or comes after it on the branch (so it contains it); false when unknown.
    pub fn contains(&self, revision: &str, commit: &str) -> bool {
        let (Ok(revision), Ok(commit)) = (Oid::from_str(revision), Oid::from_str(commit)) else { return false };
        let state = self.lock();
        match (state.positions.get(&revision), state.positions.get(&commit)) {
            (Some(r), Some(c)) => r >= c,
            _ => false,
        }
    }

    /// What the writer counted so far.
    pub fn counts(&self) -> writer::Counts {
        self.lock().counters.read()
    }
}
