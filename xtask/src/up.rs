//! `cargo xtask up`: the whole platform on this machine. The control plane,
//! OpenBao (dev), a bare GitOps repository, Argo CD, an lfx runtime with the
//! example flows, and the operator, the gateway and the webhook, each as the
//! chart's identity with the chart's admission policies and webhook
//! registered ([`crate::chart_parity`]); then
//! `examples/`, a wait until the example Instance is Ready, one run through
//! the gateway with its real key, and the `curl` that does the same.
//! Ctrl-C stops every process it started.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use cmp_crds::Instance;
use cmp_testenv::apply::{ApplyOptions, apply_yaml};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tokio::process::{Child, Command};

use cmp_testenv::keycloak;

use crate::{MANAGER, chart_parity, local_gitops, print_usage, root, start};

/// Where the gateway serves runs, and its health port (the operator's is 8080).
const GATEWAY_ADDR: &str = "127.0.0.1:8000";
const GATEWAY_HEALTH: &str = "127.0.0.1:8081";
/// Where the webhook takes Saleor's deliveries, and its health port.
const WEBHOOK_ADDR: &str = "127.0.0.1:8090";
const WEBHOOK_HEALTH: &str = "127.0.0.1:8082";
/// The example Instance that `up` waits for and runs (`examples/55-instance-local-echo.yaml`).
const EXAMPLE_NAMESPACE: &str = "cmp-acme";
const EXAMPLE_INSTANCE: &str = "echo-bot";
const EXAMPLE_KEY: &str = "main";

/// Where `examples/25-offering-local-echo.yaml` expects the local lfx runtime and its flows.
const LOCAL_LFX_PORT: u16 = 7861;
const LOCAL_FLOWS_PORT: u16 = 7862;
const LOCAL_LFX_KEY: &str = "cmp-local-lfx-key";
/// The Secret holding it, which the example Offerings name and the gateway's chart identity may read.
const LOCAL_LFX_KEY_NAMESPACE: &str = "cmp-system";
const LOCAL_LFX_KEY_SECRET: &str = "lfx-local";
/// Where `examples/56-instance-ticket-desk.yaml` expects the local ticket desk (an MCP server).
const LOCAL_DESK_PORT: u16 = 7863;
/// acme's credential for the local ticket desk, written in OpenBao at the example binding's vaultPath.
const LOCAL_DESK_TOKEN: &str = "acme-local-desk-token";
const LOCAL_DESK_PATH: &str = "connectors/acme/support/tickets";
/// The gateway's login role in the local knowledge store, and its password (local only).
const LOCAL_KNOWLEDGE_ROLE: &str = "cmp_gateway";
const LOCAL_KNOWLEDGE_PASSWORD: &str = "cmp-local-knowledge-password";
/// The document `up` gives acme's knowledge agent (`examples/57-instance-knowledge-desk.yaml`).
const EXAMPLE_DOCUMENT: &str = "examples/knowledge/acme-faq.md";
/// The gateway's widget-session signing secret (local only).
const LOCAL_WIDGET_SECRET: &str = "cmp-local-widget-secret-not-for-production";
/// The secret the local gateway signs run tokens with (the connector gateway is on).
const LOCAL_RUN_TOKEN_SECRET: &str = "cmp-local-run-token-secret-not-for-production";
/// The hosts local connector bindings may call: MCP servers on this machine. Loopback is therefore not a denied
/// network here (the API server, OpenBao, the runtimes and the gateway itself stay denied by their endpoints).
const LOCAL_CONNECTOR_HOSTS: &str = "127.0.0.1,localhost";
/// The example Organization's owner (`examples/10-organization.yaml`), who signs in to the console as `alice`.
const EXAMPLE_OWNER: &str = "alice@acme.example";
/// Starter credits of a workspace a console sign-up creates.
const LOCAL_SIGNUP_CREDITS: &str = "100";
/// The webhook's credit packs.
const CREDIT_PACKS: &str = "examples/saleor/credit-packs.yaml";
/// What the demo's buyers buy: the echo Offering's Pro plan and a credit pack
/// (`examples/25-offering-local-echo.yaml`, `examples/saleor/credit-packs.yaml`).
const DEMO_PLAN_SKU: &str = "ECHO-PRO";
const DEMO_CREDIT_PACK: &str = "CREDITS-1000";
const DEMO_CREDIT_PACK_CREDITS: i64 = 1000;
/// The Offering with the demo allowance the widget tries.
const DEMO_OFFERING: &str = "echo";

/// The CMP processes `up` started, each logging to a file; all killed when dropped.
struct Processes {
    running: Vec<(&'static str, Child, PathBuf)>,
}

impl Processes {
    fn start(&mut self, name: &'static str, command: &mut Command, logs: &Path) -> anyhow::Result<()> {
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.running.push((name, child, log));
        Ok(())
    }

    /// Waits until one of them exits, and says which, with where its log is.
    async fn first_exit(&mut self) -> String {
        loop {
            for (name, child, log) in &mut self.running {
                if let Ok(Some(status)) = child.try_wait() {
                    return format!("{name} exited ({status}); its log is {}", log.display());
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Kills each and waits until it is gone, so that the runtimes stopped
    /// after them are not the first to close their connections (which would
    /// hold their ports in TIME_WAIT, and the next `up` would wait it out).
    async fn stop(mut self) {
        for (_, child, _) in &mut self.running {
            let _ = child.kill().await;
        }
    }

    fn logs(&self) -> String {
        self.running.iter().map(|(name, _, log)| format!("  {name}: {}", log.display())).collect::<Vec<_>>().join("\n")
    }
}

/// The whole platform on this machine, as `up` starts it; dropping it stops everything.
pub(crate) struct LocalPlatform {
    pub plane: cmp_testenv::ControlPlane,
    pub client: kube::Client,
    pub gitops: local_gitops::LocalGitOps,
    pub store: cmp_testenv::saleor::SaleorStandIn,
    /// The gateway's usage events.
    pub usage: PathBuf,
    /// Where the binaries were built, `kubectl-cmp` among them.
    pub bin_dir: PathBuf,
    processes: Processes,
    flows: tokio::task::JoinHandle<()>,
    lfx: cmp_testenv::lfx::Lfx,
    desk: cmp_testenv::mcp::TicketDesk,
    knowledge: cmp_testenv::postgres::Postgres,
    keycloak: cmp_testenv::keycloak::Keycloak,
}

impl LocalPlatform {
    /// Builds the binaries, starts everything and applies `examples/`.
    pub async fn start() -> anyhow::Result<Self> {
        eprintln!("building the CMP binaries and kubectl-cmp ...");
        let built = Command::from(cmp_testenv::cargo_command())
            .args([
                "build",
                "--bins",
                "-p",
                "cmp-operator",
                "-p",
                "cmp-gateway",
                "-p",
                "cmp-webhook",
                "-p",
                "kubectl-cmp",
            ])
            .status()
            .await?;
        if !built.success() {
            bail!("cargo build failed");
        }
        let state = cmp_testenv::default_state_dir();
        let (plane, client) = start(&state).await?;
        // Keycloak takes about a minute to start: it starts beside the rest, and is waited for when the gateway
        // needs its issuer.
        eprintln!("starting Keycloak (the identity provider buyers sign in to the console with), beside the rest ...");
        let identity_provider = tokio::spawn(local_identity_provider(state.join("identity-provider")));
        let lfx = local_runtime(&client).await?;
        let flows = serve_example_flows().await?;
        let gitops = local_gitops::LocalGitOps::start(&client, &plane, &state).await?;
        let desk = local_ticket_desk(&gitops, &state).await?;
        eprintln!("starting the knowledge store (PostgreSQL with pgvector, a fresh one each time) ...");
        let knowledge_dir = state.join("knowledge");
        let _ = std::fs::remove_dir_all(&knowledge_dir);
        let knowledge = cmp_testenv::postgres::Postgres::start(&knowledge_dir).await.context("the knowledge store")?;
        let knowledge_gateway = knowledge.create_login(LOCAL_KNOWLEDGE_ROLE, LOCAL_KNOWLEDGE_PASSWORD).await?;
        let model = cmp_testenv::postgres::model_dir().context("the embedding model")?;
        let keycloak = identity_provider.await.context("starting Keycloak")??;
        eprintln!("Keycloak is ready at {}", keycloak.issuer());
        let issuer = keycloak.issuer();
        eprintln!("starting a Saleor stand-in (its signing key and JWKS; no Saleor store runs here) ...");
        let store = cmp_testenv::saleor::SaleorStandIn::start().await.context("starting the Saleor stand-in")?;

        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
        let bin_dir = target.join("debug");
        let bin = |name: &str| bin_dir.join(name);
        let logs = state.join("logs");
        std::fs::create_dir_all(&logs)?;
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        let operator_args: Vec<String> = gitops
            .operator_flags()
            .into_iter()
            .chain(["--connector-allowed-hosts".to_string(), LOCAL_CONNECTOR_HOSTS.to_string()])
            .collect();
        let usage = state.join("usage.jsonl");
        let gateway_args: Vec<String> = [
            "--addr",
            GATEWAY_ADDR,
            "--health-addr",
            GATEWAY_HEALTH,
            "--replica-name",
            "local",
            "--widget-secret",
            LOCAL_WIDGET_SECRET,
            // The connector gateway, reading credentials with OpenBao's dev token (a cluster uses the gateway's
            // Kubernetes-auth role instead).
            "--run-token-secret",
            LOCAL_RUN_TOKEN_SECRET,
            "--vault-addr",
            gitops.openbao().addr(),
            "--connector-allowed-hosts",
            LOCAL_CONNECTOR_HOSTS,
            "--connector-denied-networks",
            "169.254.0.0/16",
        ]
        .into_iter()
        .map(String::from)
        .chain(["--knowledge-model-dir".into(), model.display().to_string()])
        .chain(["--usage-file".into(), usage.display().to_string()])
        // The buyer API and console, with sign-up: users are named by their verified e-mail, as store orders name
        // owners.
        .chain(["--oidc-issuer".into(), issuer, "--oidc-audience".into(), keycloak::CLIENT.into()])
        .chain(
            ["--oidc-username-claim", "email", "--buyer-api", "--console-client-id", keycloak::CONSOLE_CLIENT]
                .map(String::from),
        )
        .chain(["--signup", "--signup-starter-credits", LOCAL_SIGNUP_CREDITS].map(String::from))
        .collect();
        let admission = chart_parity::Admission::new(&state.join("admission"))?;
        let webhook_args: Vec<String> = ["--saleor-addr", WEBHOOK_ADDR, "--health-addr", WEBHOOK_HEALTH]
            .into_iter()
            .map(String::from)
            .chain(["--saleor-api-url".into(), store.api_url().to_string()])
            .chain(["--credit-packs".into(), root().join(CREDIT_PACKS).display().to_string()])
            .chain(admission.webhook_flags())
            .collect();
        eprintln!("applying the chart's identities and admission policies (release cmp in cmp-system) ...");
        let identities = chart_parity::identities(
            plane.kubeconfig(),
            &operator_args,
            &gateway_args,
            &[
                format!("gateway.runtimeKeySecrets[0].namespace={LOCAL_LFX_KEY_NAMESPACE}"),
                format!("gateway.runtimeKeySecrets[0].name={LOCAL_LFX_KEY_SECRET}"),
            ],
            &webhook_args,
        )?;
        let mut processes = Processes { running: Vec::new() };
        processes.start(
            "cmp-operator",
            Command::new(bin("cmp-operator"))
                .env("KUBECONFIG", &identities.operator)
                .env("RUST_LOG", &rust_log)
                .env("VAULT_TOKEN", gitops.vault_token())
                .env("CMP_KNOWLEDGE_STORE_URL", knowledge.admin_url())
                .args(&operator_args),
            &logs,
        )?;
        processes.start(
            "cmp-gateway",
            Command::new(bin("cmp-gateway"))
                .env("KUBECONFIG", &identities.gateway)
                .env("RUST_LOG", &rust_log)
                .env("VAULT_TOKEN", gitops.vault_token())
                .env("CMP_GATEWAY_KNOWLEDGE_STORE_URL", &knowledge_gateway)
                .args(&gateway_args),
            &logs,
        )?;
        processes.start(
            "cmp-webhook",
            Command::new(bin("cmp-webhook"))
                .env("KUBECONFIG", &identities.webhook)
                .env("RUST_LOG", &rust_log)
                .args(&webhook_args),
            &logs,
        )?;
        let refusal = admission.register(&client).await?;
        eprintln!(
            "the admission webhook is registered; a dry-run Instance naming a missing Project was refused:\n  {refusal}"
        );
        let policies = chart_parity::policies_in_force(&client).await?;
        eprintln!("the chart's admission policies in force: {}", policies.join(", "));

        for file in example_files()? {
            let yaml = std::fs::read_to_string(&file)?;
            let name = file.display().to_string();
            ensure_namespaces(&client, &name, &yaml).await?;
            let options = ApplyOptions { field_manager: MANAGER.into(), ..Default::default() };
            let applied =
                apply_yaml(&client, &name, &yaml, &options).await.with_context(|| format!("applying {name}"))?;
            eprintln!("applied {name} ({} objects)", applied.len());
        }
        Ok(Self { plane, client, gitops, store, usage, bin_dir, processes, flows, lfx, desk, knowledge, keycloak })
    }

    /// Stops the CMP processes first (see [`Processes::stop`]), then the rest.
    pub async fn stop(self) {
        let Self { plane, gitops, store, processes, flows, lfx, desk, knowledge, keycloak, .. } = self;
        processes.stop().await;
        drop(keycloak);
        drop(desk);
        drop(knowledge);
        flows.abort();
        drop(store);
        drop(gitops);
        drop(lfx);
        drop(plane);
    }
}

pub(crate) async fn up() -> anyhow::Result<ExitCode> {
    let mut platform = LocalPlatform::start().await?;
    print_usage(&platform.plane);
    eprintln!(
        "and the kubectl plugin (kubectl finds `kubectl-cmp` on the PATH):\n  export PATH={}:$PATH\n  kubectl cmp trace {EXAMPLE_INSTANCE} -n {EXAMPLE_NAMESPACE}\n",
        platform.bin_dir.display()
    );
    eprintln!("{}\n", platform.gitops.usage());
    eprintln!("logs:\n{}\n", platform.processes.logs());
    let key = example_key(&platform.client).await?;
    let answer = run_once(&key, "hello").await?;
    eprintln!(
        "the example Instance {EXAMPLE_NAMESPACE}/{EXAMPLE_INSTANCE} is Ready; a run through the gateway answered:\n  {answer}\n"
    );
    let desk_key = example_key_of(&platform.client, "desk-bot").await?;
    let desk_answer = run_once(&desk_key, "printer on fire").await?;
    eprintln!(
        "{EXAMPLE_NAMESPACE}/desk-bot opened a ticket in acme's desk through the connector gateway (acme's credential from OpenBao):\n  {desk_answer}\n"
    );
    let kb_key = example_key_of(&platform.client, "kb-bot").await?;
    upload_example_document(&kb_key).await?;
    let kb_answer = run_once(&kb_key, "how do I reset my password?").await?;
    eprintln!(
        "{EXAMPLE_NAMESPACE}/kb-bot answered from the document {EXAMPLE_DOCUMENT} it was given (searched through the connector gateway):\n  {kb_answer}\n"
    );
    eprintln!(
        "the buyer console: http://{GATEWAY_ADDR}/console/ (identity provider {}); sign in as alice / alice-pass, \
         the owner of acme, or as bob / bob-pass, whose first sign-in makes a workspace of his own with {LOCAL_SIGNUP_CREDITS} credits\n",
        platform.keycloak.issuer()
    );
    eprintln!("run it yourself (usage events go to {}):\n", platform.usage.display());
    println!(
        "curl -s http://{GATEWAY_ADDR}/v1/runs -H 'authorization: Bearer {key}' -H 'content-type: application/json' -d '{{\"input_value\":\"hello\"}}'"
    );
    println!(
        "curl -s http://{GATEWAY_ADDR}/v1/runs -H 'authorization: Bearer {desk_key}' -H 'content-type: application/json' -d '{{\"input_value\":\"printer on fire\"}}'"
    );
    println!(
        "curl -s -X PUT http://{GATEWAY_ADDR}/v1/knowledge/documents/faq -H 'authorization: Bearer {kb_key}' -H 'content-type: text/markdown' --data-binary @{EXAMPLE_DOCUMENT}"
    );
    eprintln!(
        "\nthe webhook takes Saleor deliveries on http://{WEBHOOK_ADDR}/ (store {}); `cargo xtask demo` sends it orders. Ctrl-C stops everything.",
        platform.store.api_url()
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("stopping ..."),
        exited = platform.processes.first_exit() => eprintln!("{exited}; stopping the rest ..."),
    }
    platform.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask demo`: the platform as `up` starts it, then the buyer's
/// journey (T1-T9) with signed Saleor orders, and time to first value over
/// `orders` paid orders; prints the report and stops everything.
pub(crate) async fn demo(orders: usize) -> anyhow::Result<ExitCode> {
    let mut platform = LocalPlatform::start().await?;
    example_key(&platform.client).await?;
    let run = format!("demo{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs());
    eprintln!("running the buyer's journey ({run}) with {orders} paid orders ...\n");
    let journey = xtask::journey::Platform {
        client: platform.client.clone(),
        kubeconfig: platform.plane.kubeconfig().to_path_buf(),
        gateway: format!("http://{GATEWAY_ADDR}"),
        webhook: format!("http://{WEBHOOK_ADDR}"),
        store: &platform.store,
        openbao: platform.gitops.openbao(),
        usage_file: platform.usage.clone(),
        plan_sku: DEMO_PLAN_SKU.into(),
        credit_pack: (DEMO_CREDIT_PACK.into(), DEMO_CREDIT_PACK_CREDITS),
        demo_offering: DEMO_OFFERING.into(),
        run,
        tools: xtask::journey::ToolDesk {
            offering: "ticket-desk".into(),
            plan: "free".into(),
            url: format!("http://127.0.0.1:{LOCAL_DESK_PORT}/mcp"),
        },
    };
    let report = tokio::select! {
        report = xtask::journey::run(&journey, orders) => Some(report),
        _ = tokio::signal::ctrl_c() => None,
        exited = platform.processes.first_exit() => {
            eprintln!("{exited}");
            None
        }
    };
    drop(journey);
    let Some(report) = report else {
        platform.stop().await;
        return Ok(ExitCode::FAILURE);
    };
    println!("{}", report.text());
    if !report.passed() {
        eprintln!("logs:\n{}", platform.processes.logs());
    }
    platform.stop().await;
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Waits (up to two minutes) until the example Instance `EXAMPLE_INSTANCE` is Ready and returns
/// its key's plaintext, from the Secret its status names.
async fn example_key(client: &kube::Client) -> anyhow::Result<String> {
    example_key_of(client, EXAMPLE_INSTANCE).await
}

/// Like [`example_key`], for the example Instance `instance` of acme.
async fn example_key_of(client: &kube::Client, name: &str) -> anyhow::Result<String> {
    let instances = Api::<Instance>::namespaced(client.clone(), EXAMPLE_NAMESPACE);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let location = loop {
        let instance = instances.get_opt(name).await?;
        let status = instance.as_ref().and_then(|i| i.status.as_ref());
        let ready = status.is_some_and(|s| cmp_crds::conditions::is_true(&s.conditions, "Ready"));
        let key = status.and_then(|s| s.api_keys.iter().find(|k| k.name == EXAMPLE_KEY));
        if ready && let Some(key) = key {
            break key.secret.clone();
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the example Instance {EXAMPLE_NAMESPACE}/{name} is not Ready with its key `{EXAMPLE_KEY}` \
                 after 2 minutes: see `kubectl describe instance {name} -n {EXAMPLE_NAMESPACE}` and the operator's log"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let secret = Api::<Secret>::namespaced(client.clone(), EXAMPLE_NAMESPACE)
        .get(&location.name)
        .await
        .with_context(|| format!("reading the key's Secret {EXAMPLE_NAMESPACE}/{}", location.name))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&location.key))
        .with_context(|| format!("the Secret {EXAMPLE_NAMESPACE}/{} has no `{}`", location.name, location.key))?;
    String::from_utf8(bytes.0.clone()).context("the key is not text")
}

/// One run through the gateway with `key` and `input` (retried while the gateway warms up); the answer's body.
/// Uploads the example document to the knowledge agent whose key is `key` (retried while its Project's store is
/// being provisioned).
async fn upload_example_document(key: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(root().join(EXAMPLE_DOCUMENT))?;
    let http = reqwest::Client::new();
    for _ in 0..60 {
        let answer = http
            .put(format!("http://{GATEWAY_ADDR}/v1/knowledge/documents/faq"))
            .bearer_auth(key)
            .header("content-type", "text/markdown")
            .body(text.clone())
            .send()
            .await?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        if status != reqwest::StatusCode::SERVICE_UNAVAILABLE {
            bail!("uploading {EXAMPLE_DOCUMENT}: {status} {}", answer.text().await.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("uploading {EXAMPLE_DOCUMENT}: the knowledge store stayed unavailable for 30 s (see the operator's log)")
}

async fn run_once(key: &str, input: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let url = format!("http://{GATEWAY_ADDR}/v1/runs");
    let mut last = String::new();
    for _ in 0..60 {
        let answer = http.post(&url).bearer_auth(key).json(&serde_json::json!({"input_value": input})).send().await;
        match answer {
            Ok(response) if response.status().is_success() => return Ok(response.text().await?),
            Ok(response) => last = format!("{}: {}", response.status(), response.text().await.unwrap_or_default()),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("a run through the gateway did not succeed within 30 s; last answer: {last}")
}

/// The example files to apply: `examples/*.yaml`, in name order.
fn example_files() -> anyhow::Result<Vec<PathBuf>> {
    let dir = root().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Starts the local shared runtime (lfx) and writes its API key to the Secret `cmp-system/lfx-local`.
async fn local_runtime(client: &kube::Client) -> anyhow::Result<cmp_testenv::lfx::Lfx> {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    eprintln!("starting the local lfx runtime on 127.0.0.1:{LOCAL_LFX_PORT} ...");
    let dir = cmp_testenv::default_state_dir().join("lfx");
    let lfx = cmp_testenv::lfx::Lfx::start_on(&dir, LOCAL_LFX_KEY, LOCAL_LFX_PORT).await.context("starting lfx")?;
    let params = kube::api::PatchParams::apply(MANAGER).force();
    let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cmp-system"}});
    kube::Api::<Namespace>::all(client.clone())
        .patch("cmp-system", &params, &kube::api::Patch::Apply(namespace))
        .await
        .context("creating namespace cmp-system")?;
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": LOCAL_LFX_KEY_SECRET, "namespace": LOCAL_LFX_KEY_NAMESPACE},
        "stringData": {"apiKey": LOCAL_LFX_KEY}});
    kube::Api::<Secret>::namespaced(client.clone(), LOCAL_LFX_KEY_NAMESPACE)
        .patch(LOCAL_LFX_KEY_SECRET, &params, &kube::api::Patch::Apply(secret))
        .await
        .with_context(|| format!("writing the Secret {LOCAL_LFX_KEY_NAMESPACE}/{LOCAL_LFX_KEY_SECRET}"))?;
    Ok(lfx)
}

/// Starts the local ticket desk (the tests' MCP server, the official Python SDK's) on 127.0.0.1:7863 and writes
/// acme's credential for it in OpenBao, where `examples/56-instance-ticket-desk.yaml` binds it. The desk also
/// answers the credential the buyer's journey (`cargo xtask demo`) binds.
async fn local_ticket_desk(
    gitops: &local_gitops::LocalGitOps,
    state: &Path,
) -> anyhow::Result<cmp_testenv::mcp::TicketDesk> {
    eprintln!("starting the local ticket desk (an MCP server) on 127.0.0.1:{LOCAL_DESK_PORT} ...");
    let presented = format!("Bearer {LOCAL_DESK_TOKEN}");
    let journey = format!("Bearer {}", xtask::journey::DESK_CREDENTIAL);
    let log = state.join("logs").join("ticket-desk.log");
    std::fs::create_dir_all(state.join("logs"))?;
    let desk = cmp_testenv::mcp::TicketDesk::start_on(
        &[(&presented, "acme"), (&journey, xtask::journey::DESK_TENANT)],
        "authorization",
        log,
        LOCAL_DESK_PORT,
    )
    .await
    .context("starting the ticket desk")?;
    gitops
        .openbao()
        .run(&["kv", "put", "-mount=secret", LOCAL_DESK_PATH, &format!("token={LOCAL_DESK_TOKEN}")])
        .context("writing acme's ticket desk credential in OpenBao")?;
    Ok(desk)
}

/// Serves `examples/flows/` at `http://127.0.0.1:7862/flows/<file>`, where the example Offering fetches its artifacts.
async fn serve_example_flows() -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use axum::extract::Path as UrlPath;
    use axum::http::StatusCode;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", LOCAL_FLOWS_PORT))
        .await
        .with_context(|| format!("serving the example flows on 127.0.0.1:{LOCAL_FLOWS_PORT}"))?;
    let router = axum::Router::new().route(
        "/flows/{file}",
        axum::routing::get(|UrlPath(file): UrlPath<String>| async move {
            if file.contains('/') || file.starts_with('.') {
                return Err(StatusCode::NOT_FOUND);
            }
            std::fs::read(root().join("examples/flows").join(file)).map_err(|_| StatusCode::NOT_FOUND)
        }),
    );
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            eprintln!("serving the example flows stopped: {error}");
        }
    }))
}

/// Waits for the namespaces that namespaced examples live in: the operator
/// creates each organization's control namespace from its Organization.
/// Keycloak with the console's users: alice (`alice@acme.example`, acme's owner) and bob, both verified.
async fn local_identity_provider(dir: PathBuf) -> anyhow::Result<cmp_testenv::keycloak::Keycloak> {
    std::fs::create_dir_all(&dir)?;
    let alice = keycloak::Account { email: EXAMPLE_OWNER.into(), ..keycloak::Account::new("alice", &[]) };
    let bob = keycloak::Account::new("bob", &[]);
    keycloak::Keycloak::start_with(&dir, &[alice, bob]).await.context("starting Keycloak")
}

async fn ensure_namespaces(client: &kube::Client, name: &str, yaml: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::Api;
    let api: Api<Namespace> = Api::all(client.clone());
    for object in cmp_testenv::apply::parse_documents(name, yaml)? {
        let Some(ns) = object.metadata.namespace else {
            continue;
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while api.get_opt(&ns).await?.is_none() {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "namespace {ns} (for {name}) did not appear within 60s: is its Organization in examples/, and is cmp-operator running? see its log above"
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
