//! The writer's clone of one remote (git2): a bare mirror of the branch, with
//! no working tree to go stale. Every batch starts from the remote head just
//! fetched; the new tree is built in memory from that head's tree plus the
//! changed folders, committed on top of that head, and pushed without force.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use git2::{FetchOptions, IndexEntry, IndexTime, Oid, PushOptions, RemoteCallbacks, Repository, Signature};

use super::render::{InstanceTree, project_kustomization};

/// Why a step against the repository failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The remote could not be reached or read (network, credentials, missing repository).
    #[error("the GitOps remote {url} could not be reached: {message}")]
    Unreachable { url: String, message: String },
    /// The remote refused the push: it moved on (another writer pushed first) or a hook said no.
    #[error("the GitOps remote {url} refused the push to {branch}: {message}")]
    Rejected { url: String, branch: String, message: String },
    /// The local clone is unusable; it is rebuilt.
    #[error("the local clone at {dir} is unusable: {message}")]
    Clone { dir: String, message: String },
    /// A rendered tree could not be written.
    #[error("writing the tree failed: {0}")]
    Write(String),
}

/// One change to the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Replace a folder with these files.
    Put(InstanceTree),
    /// Remove an Instance's folder (its Project's kustomization then lists one fewer).
    Remove(String),
    /// Remove a Project's whole folder, its kustomization included.
    RemoveProject(String),
}

impl Edit {
    /// The folder it touches.
    pub fn dir(&self) -> &str {
        match self {
            Edit::Put(tree) => &tree.dir,
            Edit::Remove(dir) | Edit::RemoveProject(dir) => dir,
        }
    }
}

/// A bare mirror of the remote branch.
pub struct Mirror {
    repo: Repository,
    dir: PathBuf,
    url: String,
    branch: String,
    credentials: Option<super::Credentials>,
}

fn clone_error(dir: &Path, e: impl std::fmt::Display) -> RepoError {
    RepoError::Clone { dir: dir.display().to_string(), message: e.to_string() }
}

impl Mirror {
    /// Opens the mirror in `dir`, or creates it (an empty bare repository whose `origin` is `url`).
    pub fn open(
        dir: &Path,
        url: &str,
        branch: &str,
        credentials: Option<super::Credentials>,
    ) -> Result<Self, RepoError> {
        let repo = match Repository::open_bare(dir) {
            Ok(repo) => repo,
            Err(_) => {
                std::fs::create_dir_all(dir).map_err(|e| clone_error(dir, e))?;
                let repo = Repository::init_bare(dir).map_err(|e| clone_error(dir, e))?;
                repo.remote("origin", url).map_err(|e| clone_error(dir, e))?;
                repo
            }
        };
        match repo.find_remote("origin") {
            Ok(remote) if remote.url().ok() == Some(url) => {}
            _ => {
                let _ = repo.remote_delete("origin");
                repo.remote("origin", url).map_err(|e| clone_error(dir, e))?;
            }
        }
        Ok(Self { repo, dir: dir.to_path_buf(), url: url.into(), branch: branch.into(), credentials })
    }

    /// Deletes the mirror and creates it again.
    pub fn rebuild(self) -> Result<Self, RepoError> {
        let Self { dir, url, branch, credentials, repo } = self;
        drop(repo);
        std::fs::remove_dir_all(&dir).map_err(|e| clone_error(&dir, e))?;
        Self::open(&dir, &url, &branch, credentials)
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        if let Some(credentials) = &self.credentials {
            // libgit2 asks again after a refusal; a few answers are enough to tell a wrong key from a missing user.
            let mut asked = 0;
            callbacks.credentials(move |_url, user_from_url, allowed| {
                asked += 1;
                if asked > 4 {
                    return Err(git2::Error::new(
                        git2::ErrorCode::Auth,
                        git2::ErrorClass::Callback,
                        "authentication failed: the remote refused the credentials",
                    ));
                }
                credentials.git2(user_from_url, allowed)
            });
            callbacks.certificate_check(move |cert, _host| credentials.check_certificate(cert, &self.url));
        }
        callbacks
    }

    fn tracking_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.branch)
    }

    /// Fetches the branch; its head, or `None` while the remote has no such branch yet.
    pub fn fetch(&self) -> Result<Option<Oid>, RepoError> {
        let mut remote = self.repo.find_remote("origin").map_err(|e| clone_error(&self.dir, e))?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks());
        let refspec = format!("+refs/heads/{0}:{1}", self.branch, self.tracking_ref());
        if let Err(e) = remote.fetch(&[refspec.as_str()], Some(&mut options), None) {
            // A fetch fails for the remote's sake, or for the clone's: tell them apart by checking the clone.
            return Err(match self.damage() {
                Some(damage) => clone_error(&self.dir, format!("{damage} (fetching: {})", e.message())),
                None => self.unreachable(&e),
            });
        }
        let advertised =
            remote.list().map(|heads| heads.iter().any(|h| h.name() == format!("refs/heads/{}", self.branch)));
        match advertised {
            Ok(false) => {
                // The remote has no such branch (yet): forget any tracking ref left from before.
                if let Ok(mut stale) = self.repo.find_reference(&self.tracking_ref()) {
                    let _ = stale.delete();
                }
                Ok(None)
            }
            _ => match self.repo.refname_to_id(&self.tracking_ref()) {
                Ok(oid) => {
                    // Prove the objects are there (a damaged mirror fails here and is rebuilt).
                    let commit = self.repo.find_commit(oid).map_err(|e| clone_error(&self.dir, e))?;
                    commit.tree().map_err(|e| clone_error(&self.dir, e))?;
                    Ok(Some(oid))
                }
                Err(e) => Err(clone_error(&self.dir, e)),
            },
        }
    }

    /// What is wrong with the clone itself, if anything: its object store or its last fetched head.
    fn damage(&self) -> Option<String> {
        if !self.dir.join("objects").join("pack").is_dir() {
            return Some("its object store is missing".into());
        }
        if let Err(e) = Repository::open_bare(&self.dir) {
            return Some(format!("it cannot be opened: {}", e.message()));
        }
        if let Ok(oid) = self.repo.refname_to_id(&self.tracking_ref())
            && let Err(e) = self.repo.find_commit(oid).and_then(|c| c.tree())
        {
            return Some(format!("its last fetched head {oid} cannot be read: {}", e.message()));
        }
        None
    }

    /// Writes the files `edits` put into the clone. They do not depend on the
    /// head, so a batch writes them once, before it fetches and tries: what
    /// lies between a fetch and its push is then only the trees.
    pub fn write_blobs(&self, edits: &[Edit]) -> Result<Blobs, RepoError> {
        let write = |e: git2::Error| RepoError::Write(e.message().to_string());
        let mut ids = HashMap::new();
        for edit in edits {
            if let Edit::Put(tree) = edit {
                for (name, body) in &tree.files {
                    ids.insert(format!("{}/{name}", tree.dir), self.repo.blob(body.as_bytes()).map_err(write)?);
                }
            }
        }
        Ok(Blobs(ids))
    }

    /// The tree `edits` make of `head`'s tree (or of an empty tree): its id, and the folders whose contents changed.
    /// `blobs` holds the files already written ([`Mirror::write_blobs`]); any other is written here.
    pub fn build(
        &self,
        head: Option<Oid>,
        edits: &[Edit],
        blobs: &Blobs,
    ) -> Result<(Oid, BTreeSet<String>), RepoError> {
        let write = |e: git2::Error| RepoError::Write(e.message().to_string());
        let mut index = git2::Index::new().map_err(write)?;
        let base = match head {
            Some(oid) => {
                Some(self.repo.find_commit(oid).and_then(|c| c.tree()).map_err(|e| clone_error(&self.dir, e))?)
            }
            None => None,
        };
        if let Some(tree) = &base {
            index.read_tree(tree).map_err(write)?;
        }
        let mut projects = BTreeSet::new();
        for edit in edits {
            // Removing a folder that is not there touches nothing, not even its Project's kustomization.
            let existed = entry_id(base.as_ref(), edit.dir()).is_some();
            if matches!(edit, Edit::Remove(_)) && !existed {
                continue;
            }
            index.remove_dir(Path::new(edit.dir()), 0).map_err(write)?;
            if let Edit::Put(tree) = edit {
                for (name, body) in &tree.files {
                    let path = format!("{}/{name}", tree.dir);
                    match blobs.0.get(&path) {
                        Some(id) => add_entry(&mut index, &path, *id, body.len()),
                        None => self.add(&mut index, &path, body.as_bytes()),
                    }
                    .map_err(write)?;
                }
            }
            if let (Edit::Put(_) | Edit::Remove(_), Some((project, _))) = (edit, edit.dir().rsplit_once('/')) {
                projects.insert(project.to_string());
            }
        }
        // Each touched Project's kustomization lists the Instance folders it now holds.
        for project in &projects {
            let prefix = format!("{project}/");
            let instances: Vec<String> = index
                .iter()
                .filter_map(|entry| {
                    let path = String::from_utf8(entry.path).ok()?;
                    let (child, file) = path.strip_prefix(&prefix)?.split_once('/')?;
                    (file == "kustomization.yaml").then(|| child.to_string())
                })
                .collect();
            // Kept when empty: Argo CD then prunes the last Instance's objects (a missing folder is an error to it).
            // Only removing the Project's own folder removes it.
            let file = format!("{project}/kustomization.yaml");
            let project_removed = edits.iter().any(|e| matches!(e, Edit::RemoveProject(dir) if dir == project));
            if !project_removed {
                let body = project_kustomization(&instances).map_err(RepoError::Write)?;
                self.add(&mut index, &file, body.as_bytes()).map_err(write)?;
            }
        }
        let tree = index.write_tree_to(&self.repo).map_err(write)?;
        let new_tree = self.repo.find_tree(tree).map_err(write)?;
        let changed = edits
            .iter()
            .map(|e| e.dir())
            .filter(|dir| entry_id(base.as_ref(), dir) != entry_id(Some(&new_tree), dir))
            .map(str::to_string)
            .collect();
        Ok((tree, changed))
    }

    fn add(&self, index: &mut git2::Index, path: &str, body: &[u8]) -> Result<(), git2::Error> {
        let id = self.repo.blob(body)?;
        add_entry(index, path, id, body.len())
    }

    /// Whether the tree `tree` holds nothing.
    pub fn is_empty_tree(&self, tree: Oid) -> Result<bool, RepoError> {
        let tree = self.repo.find_tree(tree).map_err(|e| RepoError::Write(e.message().to_string()))?;
        Ok(tree.is_empty())
    }

    /// The tree of `head` (or the empty tree's id when there is none).
    pub fn tree_of(&self, head: Option<Oid>) -> Result<Option<Oid>, RepoError> {
        head.map(|oid| self.repo.find_commit(oid).map(|c| c.tree_id()).map_err(|e| clone_error(&self.dir, e)))
            .transpose()
    }

    /// Commits `tree` on top of `head` with `message`; the new commit's id.
    pub fn commit(
        &self,
        head: Option<Oid>,
        tree: Oid,
        message: &str,
        author: &Signature<'_>,
    ) -> Result<Oid, RepoError> {
        let write = |e: git2::Error| RepoError::Write(e.message().to_string());
        let tree = self.repo.find_tree(tree).map_err(write)?;
        let parent = head.map(|oid| self.repo.find_commit(oid)).transpose().map_err(write)?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo.commit(None, author, author, message, &tree, &parents).map_err(write)
    }

    /// Pushes `commit` to the branch, without force.
    pub fn push(&self, commit: Oid) -> Result<(), RepoError> {
        let local = format!("refs/heads/{}", self.branch);
        self.repo.reference(&local, commit, true, "cmp: to push").map_err(|e| clone_error(&self.dir, e))?;
        let mut remote = self.repo.find_remote("origin").map_err(|e| clone_error(&self.dir, e))?;
        let refused = std::cell::RefCell::new(None::<String>);
        let mut callbacks = self.callbacks();
        callbacks.push_update_reference(|_name, status| {
            if let Some(message) = status {
                *refused.borrow_mut() = Some(message.to_string());
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);
        let refspec = format!("{local}:{local}");
        let rejected =
            |message: String| RepoError::Rejected { url: self.url.clone(), branch: self.branch.clone(), message };
        let pushed = remote.push(&[refspec.as_str()], Some(&mut options));
        drop(options);
        match pushed {
            Ok(()) => match refused.into_inner() {
                Some(message) => Err(rejected(message)),
                None => Ok(()),
            },
            Err(e) if is_rejection(&e) => Err(rejected(e.message().to_string())),
            Err(e) => Err(self.unreachable(&e)),
        }
    }

    /// The remote failed us; when it wants credentials, refused ours or was not trusted, say where they come from.
    fn unreachable(&self, e: &git2::Error) -> RepoError {
        use super::credentials::{FLAG, Transport};
        let text = e.message();
        let auth = e.code() == git2::ErrorCode::Auth || text.contains("authentication");
        let certificate =
            e.code() == git2::ErrorCode::Certificate || text.contains("certificate") || text.contains("hostkey");
        let transport = Transport::of(&self.url);
        let ssh = matches!(transport, Transport::Ssh { .. });
        let message = match (auth, certificate, &self.credentials) {
            (true, _, None) => format!(
                "{text}: the remote wants credentials; name a Secret with username and password (or ssh-privatekey) in {FLAG}"
            ),
            (true, _, Some(_)) if ssh => format!(
                "{text}: the remote refused the SSH key; check ssh-privatekey in the Secret named by {FLAG} and that the host accepts its public key"
            ),
            (true, _, Some(c)) => format!(
                "{text}: the remote refused user {:?}; check the Secret named by {FLAG}",
                c.username.as_deref().unwrap_or_default()
            ),
            (false, true, _) if let Transport::Ssh { host, port, .. } = &transport => format!(
                "{text}: the host key of {} is not listed in known_hosts of the Secret named by {FLAG}; add the host's key (ssh-keyscan -p {port} {host}) if this is the right host",
                super::credentials::known_hosts_name(host, *port)
            ),
            (false, true, _) => format!(
                "{text}: the server's certificate is not trusted; put the CA that signed it in the key ca.crt of the Secret named by {FLAG}"
            ),
            _ => text.to_string(),
        };
        RepoError::Unreachable { url: self.url.clone(), message }
    }

    /// The commit that last changed `dir`, walking back from `head` along first parents.
    pub fn last_change(&self, head: Oid, dir: &str) -> Result<Oid, RepoError> {
        let read = |e: git2::Error| clone_error(&self.dir, e);
        let mut commit = self.repo.find_commit(head).map_err(read)?;
        let wanted = entry_id(Some(&commit.tree().map_err(read)?), dir);
        loop {
            let Ok(parent) = commit.parent(0) else { return Ok(commit.id()) };
            if entry_id(Some(&parent.tree().map_err(read)?), dir) != wanted {
                return Ok(commit.id());
            }
            commit = parent;
        }
    }

    /// The first-parent history from `head` back to the first commit `known` says it has seen
    /// (newest first, without it), and that commit (none: the walk reached the first commit).
    pub fn history_since(&self, head: Oid, known: impl Fn(Oid) -> bool) -> Result<(Vec<Oid>, Option<Oid>), RepoError> {
        let read = |e: git2::Error| clone_error(&self.dir, e);
        let mut out = Vec::new();
        let mut commit = self.repo.find_commit(head).map_err(read)?;
        loop {
            if known(commit.id()) {
                return Ok((out, Some(commit.id())));
            }
            out.push(commit.id());
            match commit.parent(0) {
                Ok(parent) => commit = parent,
                Err(_) => return Ok((out, None)),
            }
        }
    }
}

/// The ids of files written ahead of a build, by path.
#[derive(Debug, Default)]
pub struct Blobs(HashMap<String, Oid>);

/// Puts the file `path`, the blob `id` of `len` bytes, into `index`.
fn add_entry(index: &mut git2::Index, path: &str, id: Oid, len: usize) -> Result<(), git2::Error> {
    index.add(&IndexEntry {
        ctime: IndexTime::new(0, 0),
        mtime: IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        file_size: u32::try_from(len).unwrap_or(u32::MAX),
        id,
        flags: path.len().min(0xfff) as u16,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    })
}

/// The id of the tree entry at `path` (a folder), if it exists.
fn entry_id(tree: Option<&git2::Tree<'_>>, path: &str) -> Option<Oid> {
    tree?.get_path(Path::new(path)).ok().map(|e| e.id())
}

/// A push the remote refused because its branch moved (non-fast-forward), as libgit2 reports it.
fn is_rejection(error: &git2::Error) -> bool {
    matches!(error.code(), git2::ErrorCode::NotFastForward)
        || error.message().contains("non-fast-forward")
        || error.message().contains("cannot push non-fastforwardable")
}
