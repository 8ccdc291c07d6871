//! Real git repositories for tests, through the `git` CLI (an implementation
//! independent of the operator's git2): a bare remote on disk, what its
//! branch holds, and another writer that commits to it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `git` with `args`; its stdout, or what it said on failure.
pub fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("git");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command
        .args(["-c", "user.name=another writer", "-c", "user.email=another@example.com"])
        .args(args)
        .output()
        .map_err(|e| format!("running git {}: {e} (is git installed?)", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// A bare repository on disk, standing for a hosted remote; its branch is `main`.
pub struct BareRemote {
    path: PathBuf,
}

impl BareRemote {
    /// Creates an empty bare repository at `path`.
    pub fn create(path: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        git(Some(path), &["init", "--quiet", "--bare", "--initial-branch=main"])?;
        Ok(Self { path: path.to_path_buf() })
    }

    /// Its `file://` URL.
    pub fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn git(&self, args: &[&str]) -> Result<String, String> {
        let dir = format!("--git-dir={}", self.path.display());
        let mut all = vec![dir.as_str()];
        all.extend_from_slice(args);
        git(None, &all)
    }

    /// The branch's head commit, if the branch exists.
    pub fn head(&self) -> Option<String> {
        self.git(&["rev-parse", "--verify", "--quiet", "refs/heads/main"]).ok().map(|s| s.trim().to_string())
    }

    /// Commits on the branch, newest first: (id, message).
    pub fn log(&self) -> Vec<(String, String)> {
        if self.head().is_none() {
            return Vec::new();
        }
        let out = self.git(&["log", "refs/heads/main", "--format=%H%x00%B%x1e"]).unwrap_or_default();
        out.split('\u{1e}')
            .filter_map(|entry| entry.trim_start().split_once('\0'))
            .map(|(id, message)| (id.to_string(), message.to_string()))
            .collect()
    }

    /// The contents of `path` at the branch's head.
    pub fn file(&self, path: &str) -> Option<String> {
        self.git(&["show", &format!("refs/heads/main:{path}")]).ok()
    }
}

/// Another writer of the remote (a person, a CI job): its own clone, committing with the git CLI.
pub struct AnotherWriter {
    clone: PathBuf,
}

impl AnotherWriter {
    /// Clones `remote` into `dir`.
    pub fn clone(remote: &BareRemote, dir: &Path) -> Result<Self, String> {
        let _ = std::fs::remove_dir_all(dir);
        git(None, &["clone", "--quiet", &remote.url(), &dir.to_string_lossy()])?;
        Ok(Self { clone: dir.to_path_buf() })
    }

    /// On top of the remote's current head: writes (`Some`) or deletes (`None`) each file, commits and
    /// pushes. The new commit's id, or git's refusal (for example when the remote moved meanwhile).
    pub fn commit(&self, files: &[(&str, Option<&str>)], message: &str) -> Result<String, String> {
        let here = Some(self.clone.as_path());
        git(here, &["fetch", "--quiet", "origin"])?;
        match git(here, &["rev-parse", "--verify", "--quiet", "origin/main"]) {
            Ok(_) => git(here, &["checkout", "--quiet", "--force", "-B", "main", "origin/main"])?,
            // The remote has no commit yet: start the branch.
            Err(_) => git(here, &["symbolic-ref", "HEAD", "refs/heads/main"])?,
        };
        for (path, body) in files {
            let file = self.clone.join(path);
            match body {
                Some(body) => {
                    if let Some(parent) = file.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
                    }
                    std::fs::write(&file, body).map_err(|e| format!("{}: {e}", file.display()))?;
                }
                None => std::fs::remove_file(&file).map_err(|e| format!("{}: {e}", file.display()))?,
            }
        }
        git(here, &["add", "--all"])?;
        git(here, &["commit", "--quiet", "-m", message])?;
        git(here, &["push", "--quiet", "origin", "main"])?;
        Ok(git(here, &["rev-parse", "HEAD"])?.trim().to_string())
    }
}
