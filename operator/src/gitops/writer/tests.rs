//! The writer against real git repositories on disk (bare remotes made by git2).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cmp_testenv::git::{AnotherWriter, BareRemote};
use git2::Oid;

use crate::gitops::render::{InstanceTree, RenderSettings};
use crate::gitops::repo::{Blobs, Edit, Mirror, RepoError};
use crate::gitops::{Credentials, Delivery, GitOps, GitOpsSettings};

/// A folder under the temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cmp-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn remote(scratch: &Scratch) -> (BareRemote, String) {
    let remote = BareRemote::create(&scratch.0.join("remote.git")).expect("bare remote");
    let url = remote.url();
    (remote, url)
}

fn settings(scratch: &Scratch, url: &str, clone: &str) -> GitOpsSettings {
    GitOpsSettings {
        url: url.into(),
        branch: "main".into(),
        clone_dir: scratch.0.join(clone),
        author_name: "test".into(),
        author_email: "test@example.com".into(),
        credentials: None,
        render: RenderSettings { root: "tenants".into(), fetch_image: "alpine".into() },
        argocd: None,
    }
}

fn tree(instance: &str, body: &str) -> InstanceTree {
    InstanceTree {
        dir: format!("tenants/acme/p/{instance}"),
        files: BTreeMap::from([
            ("kustomization.yaml".to_string(), "resources: [cm.yaml]\n".to_string()),
            ("cm.yaml".to_string(), body.to_string()),
        ]),
    }
}

async fn delivered(gitops: &GitOps, key: &str, digest: &str) -> String {
    for _ in 0..600 {
        if let Some(Delivery::Delivered { digest: d, commit }) = gitops.delivery(key)
            && d == digest
        {
            return commit;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{key} was not delivered: {:?}", gitops.delivery(key));
}

/// The reason and message of the first failure reported for `key`.
async fn failure(gitops: &GitOps, key: &str) -> (&'static str, String) {
    for _ in 0..600 {
        if let Some(Delivery::Failed { reason, message, .. }) = gitops.delivery(key) {
            return (reason, message);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no failure reported for {key}: {:?}", gitops.delivery(key));
}

#[tokio::test]
async fn changes_arriving_together_make_one_commit_naming_each_instance_and_generation() {
    let scratch = Scratch::new("batch");
    let (path, url) = remote(&scratch);
    let gitops = GitOps::start(settings(&scratch, &url, "clone"));
    let trees: Vec<InstanceTree> = (0..50).map(|i| tree(&format!("bot-{i:02}"), &format!("n: {i}\n"))).collect();
    for (i, t) in trees.iter().enumerate() {
        gitops.submit(&format!("cmp-acme/bot-{i:02}"), 7, t);
    }
    let mut commits = Vec::new();
    for (i, t) in trees.iter().enumerate() {
        commits.push(delivered(&gitops, &format!("cmp-acme/bot-{i:02}"), &t.digest()).await);
    }
    let log = path.log();
    assert_eq!(log.len(), 1, "one commit for 50 Instances: {log:?}");
    assert!(commits.iter().all(|c| *c == log[0].0), "each Instance's status names that commit");
    assert!(log[0].1.contains("cmp-acme/bot-00 generation 7") && log[0].1.contains("cmp-acme/bot-49 generation 7"));
    let project = path.file("tenants/acme/p/kustomization.yaml").expect("project kustomization");
    assert!(project.contains("- bot-00") && project.contains("- bot-49"), "{project}");
    assert_eq!(gitops.counts().commits, 1);
}

#[tokio::test]
async fn an_unchanged_tree_makes_no_commit_and_reports_the_commit_that_last_changed_it() {
    let scratch = Scratch::new("unchanged");
    let (path, url) = remote(&scratch);
    let gitops = GitOps::start(settings(&scratch, &url, "clone"));
    let a = tree("a", "v: 1\n");
    gitops.submit("ns/a", 1, &a);
    let first = delivered(&gitops, "ns/a", &a.digest()).await;
    let b = tree("b", "v: 1\n");
    gitops.submit("ns/b", 1, &b);
    delivered(&gitops, "ns/b", &b.digest()).await;
    assert_eq!(path.log().len(), 2);

    // A restarted operator (a new writer, a new clone) submits both again: no commit, and a's
    // status still names the commit that last changed a's folder, not the head.
    let restarted = GitOps::start(settings(&scratch, &url, "clone-after-restart"));
    restarted.submit("ns/a", 1, &a);
    assert_eq!(delivered(&restarted, "ns/a", &a.digest()).await, first);
    assert_eq!(path.log().len(), 2, "no empty commit");
    assert_eq!(restarted.counts().commits, 0);
}

#[tokio::test]
async fn a_changed_instance_makes_one_new_commit_and_a_removal_another() {
    let scratch = Scratch::new("change");
    let (path, url) = remote(&scratch);
    let gitops = GitOps::start(settings(&scratch, &url, "clone"));
    let v1 = tree("bot", "version: 1\n");
    gitops.submit("ns/bot", 1, &v1);
    let c1 = delivered(&gitops, "ns/bot", &v1.digest()).await;
    let v2 = tree("bot", "version: 2\n");
    gitops.submit("ns/bot", 2, &v2);
    let c2 = delivered(&gitops, "ns/bot", &v2.digest()).await;
    assert_ne!(c1, c2);
    assert!(gitops.contains(&c2, &c1) && !gitops.contains(&c1, &c2), "history order is known");
    assert_eq!(path.file("tenants/acme/p/bot/cm.yaml").as_deref(), Some("version: 2\n"));
    let log = path.log();
    assert_eq!(log.len(), 2);
    assert!(log[0].1.contains("ns/bot generation 2"), "{}", log[0].1);

    let removed = gitops
        .remove("tenants/acme/p/bot", Some(("ns/bot".into(), 2)), Duration::from_secs(20))
        .await
        .expect("removed");
    assert_eq!(path.head(), removed);
    assert!(path.file("tenants/acme/p/bot/cm.yaml").is_none());
    let emptied = path.file("tenants/acme/p/kustomization.yaml").expect("kept, so Argo CD prunes");
    assert!(emptied.contains("resources: []"), "an empty Project lists nothing: {emptied}");
    gitops.remove("tenants/acme/p", None, Duration::from_secs(20)).await.expect("the Project's folder removed");
    assert!(path.file("tenants/acme/p/kustomization.yaml").is_none(), "a removed Project leaves nothing");
}

#[tokio::test]
async fn removing_what_was_never_written_makes_no_commit() {
    let scratch = Scratch::new("never-written");
    let (path, url) = remote(&scratch);
    let gitops = GitOps::start(settings(&scratch, &url, "clone"));
    let wait = Duration::from_secs(20);
    // An empty branch stays empty (another operator's orphan cleaned up here, say).
    let nothing = gitops.remove("tenants/acme/other/bot", Some(("ns/bot".into(), 1)), wait).await.expect("done");
    assert_eq!(nothing, None);
    gitops.remove("tenants/acme/other", None, wait).await.expect("done");
    assert!(path.log().is_empty(), "no commit on an empty branch: {:?}", path.log());
    // With content, neither a missing Instance nor a missing Project writes anything, not even an empty kustomization.
    let a = tree("a", "v: 1\n");
    gitops.submit("ns/a", 1, &a);
    let head = delivered(&gitops, "ns/a", &a.digest()).await;
    let kept = gitops.remove("tenants/acme/other/ghost", Some(("ns/ghost".into(), 1)), wait).await.expect("done");
    assert_eq!(kept, Some(head.clone()), "the head, at which it is absent");
    gitops.remove("tenants/acme/other", None, wait).await.expect("done");
    assert_eq!(path.log().len(), 1, "{:?}", path.log());
    assert!(path.file("tenants/acme/other/kustomization.yaml").is_none());
    assert_eq!(gitops.counts().commits, 1);
}

#[test]
fn files_written_ahead_build_on_any_head_the_tree_a_build_writing_them_itself_makes() {
    let scratch = Scratch::new("blobs");
    let (path, url) = remote(&scratch);
    let ours = Mirror::open(&scratch.0.join("ours"), &url, "main", None).expect("mirror");
    let theirs = AnotherWriter::clone(&path, &scratch.0.join("theirs")).expect("their clone");
    let edits = [Edit::Put(tree("a", "x: 1\n")), Edit::Put(tree("b", "x: 2\n"))];
    let blobs = ours.write_blobs(&edits).expect("blobs");
    let first = ours.fetch().expect("fetch");
    theirs.commit(&[("tenants/acme/p/theirs/kustomization.yaml", Some("resources: []\n"))], "theirs").expect("push");
    let moved = ours.fetch().expect("fetch");
    assert_ne!(first, moved, "the remote moved");
    for head in [first, moved] {
        let (ahead, changed) = ours.build(head, &edits, &blobs).expect("with the files written ahead");
        let (itself, _) = ours.build(head, &edits, &Blobs::default()).expect("writing them itself");
        assert_eq!(ahead, itself, "the same tree on {head:?}");
        assert_eq!(changed.len(), 2, "both folders changed: {changed:?}");
    }
}

#[tokio::test]
async fn a_push_onto_a_moved_remote_is_refused_and_nothing_is_lost() {
    let scratch = Scratch::new("contention");
    let (path, url) = remote(&scratch);
    let ours = Mirror::open(&scratch.0.join("ours"), &url, "main", None).expect("mirror");
    let theirs = AnotherWriter::clone(&path, &scratch.0.join("theirs")).expect("their clone");
    let start = ours.fetch().expect("fetch");
    theirs
        .commit(&[("tenants/acme/p/theirs/kustomization.yaml", Some("resources: []\n"))], "theirs")
        .expect("their push");
    let author = git2::Signature::now("t", "t@example.com").expect("sig");
    let (built, _) = ours.build(start, &[Edit::Put(tree("ours", "x: 1\n"))], &Blobs::default()).expect("tree");
    let stale: Oid = ours.commit(start, built, "ours", &author).expect("commit");
    assert!(matches!(ours.push(stale), Err(RepoError::Rejected { .. })), "a non-fast-forward push is refused");

    // The writer task, with another writer (the git CLI) pushing to the same remote all along: every change
    // lands and nothing of theirs is lost. Whether a push of ours is refused here depends on timing (the
    // window between our fetch and our push is a few milliseconds); the refusal itself is asserted above.
    let gitops = GitOps::start(settings(&scratch, &url, "writer"));
    let rival = std::thread::spawn(move || {
        (0..30)
            .filter(|i| {
                let file = format!("tenants/acme/p/rival-{i}/kustomization.yaml");
                theirs.commit(&[(&file, Some("resources: []\n"))], &format!("rival {i}")).is_ok()
            })
            .count()
    });
    let trees: Vec<InstanceTree> = (0..30).map(|i| tree(&format!("bot-{i}"), "y: 1\n")).collect();
    for (i, t) in trees.iter().enumerate() {
        gitops.submit(&format!("ns/bot-{i}"), 1, t);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (i, t) in trees.iter().enumerate() {
        delivered(&gitops, &format!("ns/bot-{i}"), &t.digest()).await;
    }
    let rival_pushes = rival.join().expect("rival");
    assert!(rival_pushes > 0, "the rival pushed too");
    for i in 0..30 {
        assert!(path.file(&format!("tenants/acme/p/bot-{i}/cm.yaml")).is_some(), "our bot-{i} is on the remote");
    }
    let project = path.file("tenants/acme/p/kustomization.yaml").expect("kustomization");
    assert!(
        project.contains("- bot-29") && project.contains("- theirs"),
        "both writers' folders are listed: {project}"
    );
    println!("rival pushes: {rival_pushes}, our push retries: {}", gitops.counts().push_retries);
}

#[tokio::test]
async fn a_damaged_clone_is_rebuilt_and_an_unreachable_remote_is_reported_then_recovered() {
    let scratch = Scratch::new("damaged");
    let (path, url) = remote(&scratch);
    let settings = settings(&scratch, &url, "clone");
    let gitops = GitOps::start(settings.clone());
    let a = tree("a", "v: 1\n");
    gitops.submit("ns/a", 1, &a);
    delivered(&gitops, "ns/a", &a.digest()).await;
    // Damage the clone: its objects are gone.
    std::fs::remove_dir_all(settings.clone_dir.join("objects")).expect("damage");
    let b = tree("b", "v: 1\n");
    gitops.submit("ns/b", 1, &b);
    delivered(&gitops, "ns/b", &b.digest()).await;
    assert_eq!(gitops.counts().rebuilds, 1, "rebuilt once");
    assert!(path.file("tenants/acme/p/a/cm.yaml").is_some() && path.file("tenants/acme/p/b/cm.yaml").is_some());

    let missing = scratch.0.join("not-yet.git");
    let gone = GitOps::start(self::settings(&scratch, &format!("file://{}", missing.display()), "clone-2"));
    gone.submit("ns/c", 1, &a);
    let failure = loop {
        match gone.delivery("ns/c") {
            Some(Delivery::Failed { reason, message, .. }) => break (reason, message),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(failure.0, "GitUnreachable", "{}", failure.1);
    assert!(failure.1.contains("not-yet.git"), "the message names the remote: {}", failure.1);
    BareRemote::create(&missing).expect("the remote appears");
    delivered(&gone, "ns/c", &a.digest()).await;
}

#[tokio::test]
async fn an_http_remote_takes_the_credentials_and_refuses_pushes_without_them() {
    let scratch = Scratch::new("http");
    let repos = scratch.0.join("repos");
    let remote = BareRemote::create(&repos.join("tenants.git")).expect("bare remote");
    let server =
        cmp_testenv::git_http::GitHttpServer::start(&repos, "cmp-writer", "s3cret-token").await.expect("server");
    let url = server.url("tenants.git");
    let a = tree("a", "v: 1\n");
    let refused = |credentials: Option<Credentials>, clone: &'static str| {
        let mut settings = settings(&scratch, &url, clone);
        settings.credentials = credentials;
        let gitops = GitOps::start(settings);
        gitops.submit("ns/a", 1, &a);
        async move { failure(&gitops, "ns/a").await }
    };
    let (reason, message) = refused(None, "clone-anonymous").await;
    assert_eq!(reason, "GitUnreachable");
    assert!(message.contains(&url) && message.contains("--gitops-credentials-secret"), "{message}");
    let wrong = Credentials::password("cmp-writer", "wrong");
    let (_, message) = refused(Some(wrong), "clone-wrong").await;
    assert!(message.contains("refused user \"cmp-writer\""), "{message}");
    assert!(remote.log().is_empty(), "nothing pushed without the right credentials");

    let mut authorized = settings(&scratch, &url, "clone-authorized");
    authorized.credentials = Some(Credentials::password("cmp-writer", "s3cret-token"));
    let gitops = GitOps::start(authorized);
    gitops.submit("ns/a", 1, &a);
    let commit = delivered(&gitops, "ns/a", &a.digest()).await;
    assert_eq!(remote.head(), Some(commit), "pushed over HTTP with the Secret's credentials");
    assert_eq!(remote.file("tenants/acme/p/a/cm.yaml").as_deref(), Some("v: 1\n"));
}

#[tokio::test]
async fn an_https_remote_is_trusted_through_the_secrets_ca() {
    cmp_core::tls::install_crypto_provider();
    let scratch = Scratch::new("https");
    let repos = scratch.0.join("repos");
    let remote = BareRemote::create(&repos.join("tenants.git")).expect("bare remote");
    let certs = scratch.0.join("certs");
    let server = cmp_testenv::git_http::GitHttpServer::start_tls(&repos, "cmp-writer", "s3cret-token", &certs)
        .await
        .expect("server");
    let url = server.url("tenants.git");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let a = tree("a", "v: 1\n");

    let mut untrusted = settings(&scratch, &url, "clone-untrusted");
    untrusted.credentials = Some(Credentials::password("cmp-writer", "s3cret-token"));
    let gitops = GitOps::start(untrusted);
    gitops.submit("ns/a", 1, &a);
    let (reason, message) = failure(&gitops, "ns/a").await;
    assert_eq!(reason, "GitUnreachable");
    assert!(message.contains("ca.crt") && message.contains(&url), "names what to add: {message}");
    assert!(remote.log().is_empty(), "nothing pushed to a server that is not trusted");

    let ca = std::fs::read_to_string(certs.join("ca.crt")).expect("ca");
    let mut trusted = settings(&scratch, &url, "clone-trusted");
    trusted.credentials = Some(Credentials { ca: Some(ca), ..Credentials::password("cmp-writer", "s3cret-token") });
    let gitops = GitOps::start(trusted);
    gitops.submit("ns/a", 1, &a);
    let commit = delivered(&gitops, "ns/a", &a.digest()).await;
    assert_eq!(remote.head(), Some(commit), "pushed over HTTPS, the server checked against ca.crt");
    assert_eq!(remote.file("tenants/acme/p/a/cm.yaml").as_deref(), Some("v: 1\n"));
}

#[tokio::test]
async fn an_ssh_remote_takes_the_deploy_key_and_checks_the_host_key() {
    use cmp_testenv::git_ssh::{GitSshServer, KeyPair};
    let scratch = Scratch::new("ssh");
    let repos = scratch.0.join("repos");
    let remote = BareRemote::create(&repos.join("tenants.git")).expect("bare remote");
    let deploy_key = KeyPair::generate(&scratch.0.join("deploy_key")).expect("deploy key");
    let other_key = KeyPair::generate(&scratch.0.join("other_key")).expect("other key");
    let server = GitSshServer::start(&repos, &deploy_key.public, &scratch.0.join("sshd")).await.expect("server");
    let url = server.url("tenants.git");
    let a = tree("a", "v: 1\n");
    let ssh = |key: &KeyPair, known_hosts: String| Credentials {
        ssh_private_key: Some(key.private.clone()),
        known_hosts: Some(known_hosts),
        ..Credentials::default()
    };
    let attempt = |credentials: Credentials, clone: &'static str| {
        let mut settings = settings(&scratch, &url, clone);
        settings.credentials = Some(credentials);
        let gitops = GitOps::start(settings);
        gitops.submit("ns/a", 1, &a);
        gitops
    };

    // A server whose host key is not the one in known_hosts is not trusted, whatever it answers.
    let port = url.split(':').nth(2).and_then(|rest| rest.split('/').next()).expect("port");
    let impostor = format!("[127.0.0.1]:{port} {}\n", other_key.public);
    let (reason, message) = failure(&attempt(ssh(&deploy_key, impostor), "clone-impostor"), "ns/a").await;
    assert_eq!(reason, "GitUnreachable");
    assert!(message.contains("host key") && message.contains(&format!("[127.0.0.1]:{port}")), "{message}");

    // A key the host does not accept is refused, naming the Secret's key.
    let (_, message) = failure(&attempt(ssh(&other_key, server.known_hosts()), "clone-other-key"), "ns/a").await;
    assert!(message.contains("ssh-privatekey"), "{message}");
    assert!(remote.log().is_empty(), "nothing pushed without the deploy key and the right host");

    let gitops = attempt(ssh(&deploy_key, server.known_hosts()), "clone-deploy-key");
    let commit = delivered(&gitops, "ns/a", &a.digest()).await;
    assert_eq!(remote.head(), Some(commit), "pushed over SSH with the deploy key");
    assert_eq!(remote.file("tenants/acme/p/a/cm.yaml").as_deref(), Some("v: 1\n"));
}

/// Stands in for another writer fast enough to win every race against a big push: the remote's
/// pre-receive hook refuses any push that changes more than `most` Instance folders.
fn refuse_pushes_of_more_than(remote: &BareRemote, most: usize) {
    use std::os::unix::fs::PermissionsExt;
    let hook = remote.path().join("hooks/pre-receive");
    let script = format!(
        "#!/bin/sh\nwhile read old new ref; do\n  if [ \"$old\" = 0000000000000000000000000000000000000000 ]; then\n    files=$(git ls-tree -r --name-only \"$new\")\n  else\n    files=$(git diff --name-only \"$old\" \"$new\")\n  fi\n  n=$(echo \"$files\" | awk -F/ 'NF>=5 {{print $1\"/\"$2\"/\"$3\"/\"$4}}' | sort -u | wc -l)\n  if [ \"$n\" -gt {most} ]; then echo \"another writer got there first ($n folders)\" >&2; exit 1; fi\ndone\n"
    );
    std::fs::write(&hook, script).expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("hook mode");
}

#[tokio::test]
async fn a_batch_that_loses_every_push_is_split_until_it_lands() {
    let scratch = Scratch::new("split");
    let repos = scratch.0.join("repos");
    let remote = BareRemote::create(&repos.join("tenants.git")).expect("bare remote");
    refuse_pushes_of_more_than(&remote, 3);
    let server =
        cmp_testenv::git_http::GitHttpServer::start(&repos, "cmp-writer", "s3cret-token").await.expect("server");
    let mut settings = settings(&scratch, &server.url("tenants.git"), "clone");
    settings.credentials = Some(Credentials::password("cmp-writer", "s3cret-token"));
    let counters = crate::gitops::writer::Counters::default();
    let gitops = GitOps::counted(settings, counters.clone());
    let trees: Vec<InstanceTree> = (0..10).map(|i| tree(&format!("bot-{i}"), "z: 1\n")).collect();
    for (i, t) in trees.iter().enumerate() {
        gitops.submit(&format!("ns/bot-{i}"), 1, t);
    }
    let (reason, message) = failure(&gitops, "ns/bot-0").await;
    assert_eq!(reason, "GitPushRejected", "the whole batch lost first: {message}");
    assert!(
        message.contains("pre-receive hook declined") && message.contains("the remote itself refuses"),
        "the remote's own refusal is told at once, in its words: {message}"
    );
    for (i, t) in trees.iter().enumerate() {
        delivered(&gitops, &format!("ns/bot-{i}"), &t.digest()).await;
    }
    let commits = remote.log().len();
    assert!((4..=10).contains(&commits), "ten edits landed in batches of at most three: {commits} commits");
    assert!(counters.read().push_retries > 0, "the lost pushes are counted");
}

#[test]
fn lost_races_are_told_only_after_the_grace_and_any_other_failure_at_once() {
    use crate::gitops::writer::{CONTENTION_GRACE, tells_instances};
    assert!(!tells_instances(true, Duration::ZERO), "a race just lost is tried again, quietly");
    assert!(!tells_instances(true, CONTENTION_GRACE - Duration::from_millis(1)));
    assert!(tells_instances(true, CONTENTION_GRACE), "races lost for the whole grace are told");
    assert!(
        tells_instances(false, Duration::ZERO),
        "a refusal, an unreachable remote or a render failure is told at once"
    );
}

#[test]
fn a_batch_closes_a_quiet_pause_after_its_last_edit_and_at_most_a_second_after_its_first_was_sent() {
    use crate::gitops::writer::{GATHER_MAX, GATHER_QUIET, GatherWindow};
    let ms = Duration::from_millis;
    let start = tokio::time::Instant::now();
    let mut window = GatherWindow::opened_at(start);
    assert_eq!(window.left(start), Some(GATHER_QUIET), "a lone edit waits a quiet pause for company");
    assert_eq!(window.left(start + GATHER_QUIET), None, "and then closes");

    // A steady stream: each edit extends the pause, but not past a second after the first.
    for at in (100..=900).step_by(100) {
        window.arrived(start + ms(at));
    }
    assert_eq!(window.left(start + ms(900)), Some(GATHER_MAX - ms(900)), "capped by the first edit");
    assert_eq!(window.left(start + GATHER_MAX), None);

    // Edits that waited in the channel while the previous batch was written have used up their window.
    let written_until = start + ms(1_500);
    let mut waited = GatherWindow::opened_at(start + ms(200));
    waited.arrived(start + ms(1_400));
    assert_eq!(waited.left(written_until), None, "closed at once: the first was sent over a second ago");
    let mut recent = GatherWindow::opened_at(start + ms(1_300));
    recent.arrived(start + ms(1_450));
    assert_eq!(recent.left(written_until), Some(ms(200)), "a quiet pause after the last, as sent");
}

#[tokio::test]
async fn a_writer_whose_handle_is_dropped_stops_instead_of_calling_the_remote_forever() {
    let scratch = Scratch::new("dropped");
    let missing = scratch.0.join("never.git");
    let gitops = GitOps::start(settings(&scratch, &format!("file://{}", missing.display()), "clone"));
    let mut wakes = gitops.take_wakes().expect("wakes");
    gitops.submit("ns/a", 1, &tree("a", "v: 1\n"));
    assert_eq!(failure(&gitops, "ns/a").await.0, "GitUnreachable");
    drop(gitops);
    // The writer holds the only sender of wakes: they end when it stops (it would keep failing, and waking, otherwise).
    let stopped = tokio::time::timeout(Duration::from_secs(30), async { while wakes.recv().await.is_some() {} }).await;
    assert!(stopped.is_ok(), "the writer still runs after its handle was dropped");
}
