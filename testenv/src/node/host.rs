//! What a node does to its machine: the cgroups its pods run in, and removing
//! what it leaves behind (its pods' processes, outside the node's network
//! namespace in namespaces of their own, their mounts, and their cgroups).

use std::path::{Path, PathBuf};

/// Where the machine mounts its cgroup hierarchies.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup the node's pods run under (kubelet's `cgroupRoot`): `name`
/// below this process's own memory cgroup, so the pods count against the
/// limits this process runs under.
pub fn cgroup_root(name: &str) -> String {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let memory = own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers.split(',').any(|c| c == "memory").then(|| path.trim_end_matches('/').to_string())
    });
    format!("{}/{name}", memory.unwrap_or_default())
}

/// Creates `root` in every cgroup v1 hierarchy (kubelet refuses a
/// `cgroupRoot` that is missing from one), giving new cpuset cgroups their
/// parent's CPUs and memory nodes (an empty cpuset takes no process).
pub fn create_cgroups(root: &str) -> Result<(), crate::Error> {
    for hierarchy in hierarchies() {
        let mut dir = hierarchy.clone();
        for part in root.split('/').filter(|p| !p.is_empty()) {
            let parent = dir.clone();
            dir = dir.join(part);
            if dir.is_dir() {
                continue;
            }
            std::fs::create_dir(&dir).map_err(|source| crate::Error::Io { path: dir.clone(), source })?;
            for inherited in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(value) = std::fs::read_to_string(parent.join(inherited)) {
                    std::fs::write(dir.join(inherited), value.trim())
                        .map_err(|source| crate::Error::Io { path: dir.join(inherited), source })?;
                }
            }
        }
    }
    Ok(())
}

/// Kills every process in the cgroups under `root` (kubelet's `cgroupRoot`
/// for the node), in every hierarchy, then removes those cgroups.
pub fn kill_pods(root: &str) {
    let trees: Vec<PathBuf> =
        hierarchies().into_iter().map(|h| h.join(root.trim_start_matches('/'))).filter(|t| t.is_dir()).collect();
    for _ in 0..20 {
        let mut alive = 0;
        for tree in &trees {
            for procs in files_named(tree, "cgroup.procs") {
                for pid in std::fs::read_to_string(&procs).unwrap_or_default().split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        alive += 1;
                        let _ =
                            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
        }
        if alive == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for tree in &trees {
        remove_cgroups(tree);
    }
}

/// Unmounts everything mounted under `dir` (containers' root filesystems,
/// pods' volumes and network namespaces), deepest first, lazily.
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|point| Path::new(point).starts_with(dir))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let _ = nix_umount(point);
    }
}

fn nix_umount(point: &str) -> std::io::Result<std::process::ExitStatus> {
    // /proc/mounts escapes spaces as \040; the node's paths have none.
    std::process::Command::new("umount").args(["--lazy", point]).stderr(std::process::Stdio::null()).status()
}

/// The cgroup v1 hierarchies (not cgroup v2's `unified`, which kubelet does not use on a hybrid machine).
fn hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    entries.flatten().filter(|e| e.file_name() != "unified").map(|e| e.path()).filter(|p| p.is_dir()).collect()
}

fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            } else if entry.file_name() == name {
                found.push(path);
            }
        }
    }
    found
}

/// Removes a cgroup and the ones below it (a cgroup directory is removed
/// with rmdir once it has no processes and no children).
fn remove_cgroups(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroups(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Kills (SIGKILL) the processes of the pod `uid`'s containers under `root`,
/// as a crash would, leaving its sandbox (the pause process) alone so the
/// pod keeps its address and kubelet restarts the containers. Returns how
/// many processes were killed.
pub fn crash_pod(root: &str, uid: &str) -> usize {
    let pod = format!("pod{uid}");
    let Some(memory) = hierarchies().into_iter().find(|h| h.ends_with("memory")) else { return 0 };
    let mut pending = vec![memory.join(root.trim_start_matches('/'))];
    let mut killed = 0;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            if entry.file_name().to_string_lossy() != pod {
                pending.push(entry.path());
                continue;
            }
            for procs in files_named(&entry.path(), "cgroup.procs") {
                for pid in std::fs::read_to_string(&procs).unwrap_or_default().split_whitespace() {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    if let (Ok(pid), false) = (pid.parse::<i32>(), comm.trim() == "pause") {
                        let signal = nix::sys::signal::Signal::SIGKILL;
                        killed += usize::from(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).is_ok());
                    }
                }
            }
        }
    }
    killed
}
