//! The journey's steps, each showing one acceptance case against the running platform.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use cmp_crds::instance::ConnectorSecret;
use cmp_crds::names::{connector_role, control_namespace, runtime_namespace};
use cmp_crds::{Instance, Offering, Wallet};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::orders::{self, CANCELLED, PAID};
use super::{Buyer, Order, Plan, Platform, Tenant, eventually, network, plan_of, ready_key};

/// The steps, in the order they run.
pub const STEPS: [(&str, &str); 9] = [
    ("T1", "a paid order creates the buyer's Organization (with starter credits), Project, Instance and API key"),
    ("T2", "the key runs the agent, and the answer is the real flow's"),
    ("T4", "every run debits the Wallet; balance and usage are in the Wallet and the usage events"),
    ("T5", "an exhausted Wallet answers 402; a top-up order unblocks it"),
    ("T3", "the rate limit answers 429"),
    (
        "T6",
        "a connector binding's secret is found, no runtime can read it, another tenant's path is refused, and an agent calls the buyer's own tool with her credential",
    ),
    ("T7", "isolation: another tenant's key gets 403, no ingress between tenants, tenancy labels cannot change"),
    ("T8", "free demo runs through a widget session, then 402"),
    ("T9", "cancelling the order suspends the Instance (403) and withdraws its credits"),
];

/// The journey's state between steps.
pub struct Journey<'p> {
    p: &'p Platform<'p>,
    http: reqwest::Client,
    plan: Option<Plan>,
    /// The first buyer (T1-T6), and the second (T7, T9).
    a: Option<Tenant>,
    b: Option<Tenant>,
    /// Successful runs of each buyer's key so far.
    runs: BTreeMap<String, i64>,
    /// Credits each Organization spent beside its buyer's key's runs (the tool agent's run and calls, T6).
    spent_elsewhere: BTreeMap<String, i64>,
    pub time_to_first_value: Vec<Duration>,
}

/// A run's answer: its status, the error code of a refusal, and the body.
struct Answer {
    status: u16,
    code: String,
    body: String,
}

impl<'p> Journey<'p> {
    pub fn new(p: &'p Platform<'p>) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap_or_default();
        Self {
            p,
            http,
            plan: None,
            a: None,
            b: None,
            runs: BTreeMap::new(),
            spent_elsewhere: BTreeMap::new(),
            time_to_first_value: Vec::new(),
        }
    }

    pub async fn step(&mut self, id: &str) -> anyhow::Result<String> {
        match id {
            "T1" => self.paid_order().await,
            "T2" => self.real_answer().await,
            "T3" => self.rate_limit().await,
            "T4" => self.debits().await,
            "T5" => self.exhaust_and_top_up().await,
            "T6" => self.connectors().await,
            "T7" => self.isolation().await,
            "T8" => self.widget().await,
            "T9" => self.cancellation().await,
            other => bail!("no step {other}"),
        }
    }

    fn plan(&self) -> anyhow::Result<&Plan> {
        self.plan.as_ref().context("T1 found no plan")
    }

    fn a(&self) -> anyhow::Result<&Tenant> {
        self.a.as_ref().context("T1 created no buyer")
    }

    /// Delivers `buyer`'s paid order `number` of `lines`, waits for its
    /// Instance and key, and runs it until a run succeeds: the tenant and
    /// the time from the delivery to that run.
    pub async fn first_value(
        &mut self,
        buyer: &Buyer,
        number: u32,
        lines: &[(&str, i64)],
    ) -> anyhow::Result<(Tenant, Duration)> {
        let order = Order::new(&self.p.run, number, buyer, lines);
        let started = Instant::now();
        let delivered = orders::deliver(&self.http, self.p.store, &self.p.webhook, PAID, &order, false).await?;
        let instance = delivered.instances.first().context("the order created no Instance")?.clone();
        let namespace = control_namespace(&delivered.organization);
        let key = ready_key(&self.p.client, &namespace, &instance).await?;
        let tenant = Tenant { order, organization: delivered.organization, namespace, instance, key };
        self.run_until_ok(&tenant.key, "first value").await?;
        let took = started.elapsed();
        *self.runs.entry(tenant.key.clone()).or_default() += 1;
        self.time_to_first_value.push(took);
        Ok((tenant, took))
    }

    /// Runs with `key` every 100 ms until a run succeeds; how many were refused before it.
    async fn run_until_ok(&self, key: &str, input: &str) -> anyhow::Result<usize> {
        let deadline = Instant::now() + super::CONVERGE;
        let mut refused = 0;
        loop {
            let last = match self.run_by_key(key, input).await {
                Ok(answer) if answer.status == 200 => return Ok(refused),
                Ok(answer) => format!("{} {}: {}", answer.status, answer.code, answer.body),
                Err(error) => format!("{error:#}"),
            };
            refused += 1;
            if Instant::now() > deadline {
                bail!("no run succeeded within {} s; the last answer: {last}", super::CONVERGE.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn run_by_key(&self, key: &str, input: &str) -> anyhow::Result<Answer> {
        self.post(&format!("{}/v1/runs", self.p.gateway), Some(key), None, input).await
    }

    async fn post(&self, url: &str, key: Option<&str>, session: Option<&str>, input: &str) -> anyhow::Result<Answer> {
        let mut request = self.http.post(url).json(&json!({"input_value": input}));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        if let Some(session) = session {
            request = request.header("x-widget-session", session);
        }
        let response = request.send().await.with_context(|| format!("POST {url}"))?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let code = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
            .unwrap_or_default();
        Ok(Answer { status, code, body })
    }

    async fn wallet(&self, tenant: &Tenant) -> anyhow::Result<Wallet> {
        Ok(Api::<Wallet>::namespaced(self.p.client.clone(), &tenant.namespace).get(&tenant.organization).await?)
    }

    /// Waits until the Wallet counts exactly `runs` runs at the plan's price as consumed (and what was spent
    /// elsewhere).
    async fn settled_wallet(&self, tenant: &Tenant) -> anyhow::Result<Wallet> {
        let runs = self.runs.get(&tenant.key).copied().unwrap_or(0);
        let consumed = runs * self.plan()?.price + self.spent_elsewhere.get(&tenant.organization).copied().unwrap_or(0);
        let api = Api::<Wallet>::namespaced(self.p.client.clone(), &tenant.namespace);
        eventually(
            &format!("the Wallet of {} counting {runs} runs ({consumed} credits)", tenant.organization),
            || async {
                let wallet = api.get(&tenant.organization).await.ok()?;
                (wallet.status.as_ref()?.consumed == consumed).then_some(wallet)
            },
        )
        .await
    }

    async fn paid_order(&mut self) -> anyhow::Result<String> {
        let plan = plan_of(&self.p.client, &self.p.plan_sku).await?;
        self.plan = Some(plan.clone());
        let buyer = Buyer::new(&self.p.run, "ada");
        let (a, took) = self.first_value(&buyer, 1, &[(self.p.plan_sku.as_str(), 1)]).await?;
        let wallet = self.wallet(&a).await?;
        let starter = wallet.spec.grants.iter().find(|g| g.id == "starter").map(|g| g.credits);
        let included =
            wallet.spec.grants.iter().filter(|g| g.id.starts_with("saleor.")).map(|g| g.credits).sum::<i64>();
        ensure!(starter.is_some_and(|c| c > 0), "the Wallet has no starter grant: {:?}", wallet.spec.grants);
        ensure!(included == plan.included, "the order granted {included} credits, the plan includes {}", plan.included);
        let project = Api::<cmp_crds::Project>::namespaced(self.p.client.clone(), &a.namespace).get("default").await;
        project.context("the buyer's Project `default`")?;
        let detail = format!(
            "Organization {}, Project default, Instance {} of {}/{} with key `default`; starter grant {} + order grant {included}; time to first value {} ms",
            a.organization,
            a.instance,
            plan.offering,
            plan.id,
            starter.unwrap_or_default(),
            took.as_millis()
        );
        self.a = Some(a);
        Ok(detail)
    }

    async fn real_answer(&mut self) -> anyhow::Result<String> {
        let a = self.a()?.clone();
        let input = format!("journey {} says hello", self.p.run);
        let answer = self.run_by_key(&a.key, &input).await?;
        ensure!(answer.status == 200, "the run answered {} {}: {}", answer.status, answer.code, answer.body);
        ensure!(answer.body.contains(&input), "the echo flow did not say back {input:?}: {}", answer.body);
        *self.runs.entry(a.key.clone()).or_default() += 1;
        Ok(format!("the echo flow said back {input:?} ({} bytes of lfx output)", answer.body.len()))
    }

    async fn debits(&mut self) -> anyhow::Result<String> {
        let a = self.a()?.clone();
        let price = self.plan()?.price;
        let wallet = self.settled_wallet(&a).await?;
        let status = wallet.status.context("no Wallet status")?;
        ensure!(
            status.balance == status.granted - status.consumed,
            "balance {} is not granted - consumed",
            status.balance
        );
        let usage = std::fs::read_to_string(&self.p.usage_file)
            .with_context(|| format!("reading the usage events in {}", self.p.usage_file.display()))?;
        let events: Vec<Value> = usage
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["data"]["organization"] == a.organization.as_str())
            .collect();
        let runs = self.runs.get(&a.key).copied().unwrap_or(0);
        ensure!(events.len() as i64 == runs, "{} usage events for {runs} runs: {events:?}", events.len());
        ensure!(events.iter().all(|e| e["data"]["credits"] == price), "each event charges {price}: {events:?}");
        Ok(format!(
            "{runs} runs: Wallet granted {}, consumed {}, balance {} (kubectl get wallet {} -n {}); {} usage events of {price} credits",
            status.granted,
            status.consumed,
            status.balance,
            a.organization,
            a.namespace,
            events.len()
        ))
    }

    async fn exhaust_and_top_up(&mut self) -> anyhow::Result<String> {
        let a = self.a()?.clone();
        let price = self.plan()?.price;
        let balance = self.settled_wallet(&a).await?.status.map_or(0, |s| s.balance);
        let affordable = balance / price;
        let mut succeeded = 0;
        let refusal = loop {
            let answer = self.run_by_key(&a.key, "spend").await?;
            match answer.status {
                200 => succeeded += 1,
                402 => break answer,
                _ => bail!("a run answered {} {}: {}", answer.status, answer.code, answer.body),
            }
            ensure!(succeeded <= affordable, "{succeeded} runs succeeded on a balance of {balance} at {price} a run");
        };
        *self.runs.entry(a.key.clone()).or_default() += succeeded;
        ensure!(refusal.code == "insufficient_credits", "the 402 says {}: {}", refusal.code, refusal.body);
        let (pack, credits) = (&self.p.credit_pack.0, self.p.credit_pack.1);
        let top_up = Order::new(&self.p.run, 2, &a.order.buyer, &[(pack.as_str(), 1)]);
        orders::deliver(&self.http, self.p.store, &self.p.webhook, PAID, &top_up, false).await?;
        let paid = Instant::now();
        let refused = self.run_until_ok(&a.key, "after the top-up").await?;
        let unblocked = paid.elapsed();
        *self.runs.entry(a.key.clone()).or_default() += 1;
        Ok(format!(
            "{succeeded} runs spent the balance of {balance}, then 402 insufficient_credits; a {credits}-credit top-up order unblocked the key {} ms after the webhook answered ({refused} runs refused meanwhile)",
            unblocked.as_millis()
        ))
    }

    async fn rate_limit(&mut self) -> anyhow::Result<String> {
        let a = self.a()?.clone();
        let limit = self.plan()?.requests_per_minute;
        let burst = usize::try_from(limit).unwrap_or(0) + 5;
        let answers = futures::future::join_all((0..burst).map(|_| self.run_by_key(&a.key, "burst"))).await;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for answer in &answers {
            let answer = answer.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            *counts.entry(format!("{} {}", answer.status, answer.code).trim().to_string()).or_default() += 1;
        }
        let succeeded = counts.get("200").copied().unwrap_or(0);
        *self.runs.entry(a.key.clone()).or_default() += succeeded as i64;
        let limited = counts.get("429 rate_limited").copied().unwrap_or(0);
        ensure!(limited > 0, "{burst} requests at once against {limit} a minute, and none answered 429: {counts:?}");
        Ok(format!("{burst} requests at once against a limit of {limit} a minute: {counts:?}"))
    }

    async fn connectors(&mut self) -> anyhow::Result<String> {
        let a = self.a()?.clone();
        // A second tenant's secret to be refused.
        let b_buyer = Buyer::new(&self.p.run, "bob");
        let lines = [(self.p.plan_sku.as_str(), 1), (self.p.credit_pack.0.as_str(), 1)];
        let (b, _) = self.first_value(&b_buyer, 3, &lines).await?;
        let own = format!("connectors/{}/default/crm", a.organization);
        let other = format!("connectors/{}/default/crm", b.organization);
        for (path, value) in [(&own, "a-credential"), (&other, "b-credential")] {
            self.p.openbao.run(&["kv", "put", "-mount=secret", path, &format!("token={value}")])?;
        }
        let instances = Api::<Instance>::namespaced(self.p.client.clone(), &a.namespace);
        let bind = |paths: &[&str]| {
            let bindings: Vec<Value> = paths
                .iter()
                .enumerate()
                .map(|(i, p)| json!({"name": format!("crm{i}"), "type": "hubspot", "vaultPath": p}))
                .collect();
            Patch::Merge(json!({"spec": {"connectors": bindings}}))
        };
        instances.patch(&a.instance, &PatchParams::default(), &bind(&[&own])).await?;
        eventually("the binding's secret Found", || async {
            let status = instances.get(&a.instance).await.ok()?.status?;
            (status.connectors.first()?.secret == ConnectorSecret::Found).then_some(())
        })
        .await?;

        // Only the gateway reads connector secrets: her runtime's ServiceAccount has no role to log in to.
        let (runtime, role) =
            (runtime_namespace(&a.organization, "default"), connector_role(&a.organization, "default"));
        let jwt = cmp_testenv::test::service_account_token(&self.p.client, &runtime, "cmp-runtime", None).await?;
        let login = self.p.openbao.run(&[
            "write",
            "-format=json",
            "auth/kubernetes/login",
            &format!("role={role}"),
            &format!("jwt={jwt}"),
        ]);
        let refused = login.err().map(|e| e.to_string()).unwrap_or_default();
        ensure!(
            refused.contains("invalid role name") || refused.contains("not authorized"),
            "her runtime logged in to OpenBao as {role}: {refused:?}"
        );

        // Binding another tenant's path is refused before anything is written.
        instances.patch(&a.instance, &PatchParams::default(), &bind(&[&own, &other])).await?;
        let message = eventually("ConnectorOutsideTenant", || async {
            let status = instances.get(&a.instance).await.ok()?.status?;
            let ready = cmp_crds::conditions::find(&status.conditions, cmp_crds::conditions::READY)?;
            (ready.reason == "ConnectorOutsideTenant").then(|| ready.message.clone())
        })
        .await?;
        instances.patch(&a.instance, &PatchParams::default(), &bind(&[&own])).await?;
        ready_key(&self.p.client, &a.namespace, &a.instance).await?;
        let tool = self.tool_call(&b).await?;
        self.b = Some(b);
        Ok(format!(
            "{own} found; {runtime}'s runtime cannot log in to OpenBao ({role} does not exist: only the gateway reads connector secrets); binding {other}: ConnectorOutsideTenant ({message}); {tool}"
        ))
    }

    /// B binds her own ticket desk to an agent that calls it: its run opens a ticket with her credential (which the
    /// gateway reads from OpenBao; the desk names whose it is), the caller never sees the run's token, and the run
    /// and the tool call are charged to her Wallet and audited.
    async fn tool_call(&mut self, b: &Tenant) -> anyhow::Result<String> {
        let desk = &self.p.tools;
        let path = format!("connectors/{}/default/tickets", b.organization);
        self.p.openbao.run(&["kv", "put", "-mount=secret", &path, &format!("token={}", super::DESK_CREDENTIAL)])?;
        let instance = json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": "desk", "namespace": b.namespace},
            "spec": {"project": "default", "offering": desk.offering, "version": "1", "plan": desk.plan,
                     "apiKeys": [{"name": "main"}],
                     "connectors": [{"name": "tickets", "type": "tickets", "url": desk.url, "vaultPath": path,
                                     "allowedTools": ["create_ticket"]}]}});
        let instances = Api::<Instance>::namespaced(self.p.client.clone(), &b.namespace);
        instances.patch("desk", &PatchParams::apply("cmp-journey").force(), &Patch::Apply(instance)).await?;
        let key = ready_key(&self.p.client, &b.namespace, "desk").await?;
        let offering = Api::<Offering>::all(self.p.client.clone()).get(&desk.offering).await?;
        let plan = offering.spec.plans.iter().find(|p| p.id == desk.plan).context("the tool Offering's plan")?;
        let answer = self.run_by_key(&key, "printer on fire").await?;
        ensure!(answer.status == 200, "the tool agent answered {} {}: {}", answer.status, answer.code, answer.body);
        let opened = format!("{}: opened ticket 'printer on fire'", super::DESK_TENANT);
        ensure!(answer.body.contains(&opened), "the desk did not open B's ticket with B's credential: {}", answer.body);
        ensure!(!answer.body.contains("cmpr_"), "the caller was given the run's token: {}", answer.body);
        let charged = plan.credits_per_run + plan.credits_per_tool_call;
        *self.spent_elsewhere.entry(b.organization.clone()).or_default() += charged;
        let calls = eventually("the tool call's audit event", || async {
            let usage = std::fs::read_to_string(&self.p.usage_file).ok()?;
            let calls: Vec<Value> = usage
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| e["type"] == "dev.gsv.cmp.tool.called")
                .map(|e| e["data"].clone())
                .filter(|c| c["organization"] == b.organization.as_str() && c["method"] == "tools/call")
                .collect();
            (!calls.is_empty()).then_some(calls)
        })
        .await?;
        ensure!(calls.len() == 1, "one tools/call, audited once: {calls:?}");
        let call = &calls[0];
        ensure!(
            call["tool"] == "create_ticket"
                && call["binding"] == "tickets"
                && call["outcome"] == "success"
                && call["credits"] == plan.credits_per_tool_call,
            "the audit event: {call}"
        );
        ensure!(!answer.body.contains(super::DESK_CREDENTIAL), "the answer holds B's credential");
        Ok(format!(
            "B's agent {} opened a ticket in her own desk with her credential ({opened:?}); run {} + tool call {} credits, audited as {}",
            desk.offering, plan.credits_per_run, plan.credits_per_tool_call, call["outcome"]
        ))
    }

    async fn isolation(&mut self) -> anyhow::Result<String> {
        let a = self.a()?.clone();
        let b = self.b.clone().context("T6 created no second buyer")?;
        let path = |t: &Tenant| format!("{}/v1/instances/{}/{}/runs", self.p.gateway, t.organization, t.instance);
        let own = self.post(&path(&b), Some(&b.key), None, "mine").await?;
        ensure!(own.status == 200, "B's key on B's Instance answered {} {}", own.status, own.code);
        *self.runs.entry(b.key.clone()).or_default() += 1;
        let cross = self.post(&path(&a), Some(&b.key), None, "theirs").await?;
        ensure!(
            cross.status == 403,
            "B's key on A's Instance answered {} {}: {}",
            cross.status,
            cross.code,
            cross.body
        );

        let (a_runtime, b_runtime) =
            (runtime_namespace(&a.organization, "default"), runtime_namespace(&b.organization, "default"));
        let namespaces = Api::<Namespace>::all(self.p.client.clone());
        let a_labels = namespaces.get(&a_runtime).await?.metadata.labels.unwrap_or_default();
        let policies = Api::<NetworkPolicy>::namespaced(self.p.client.clone(), &b_runtime);
        let policies = policies.list(&ListParams::default()).await?.items;
        ensure!(
            !network::admits_ingress_from(&policies, &a_labels),
            "the NetworkPolicies of {b_runtime} admit ingress from {a_runtime}"
        );

        // Even a cluster administrator who is not the operator cannot move a namespace to another tenant.
        let admin = impersonating(&self.p.kubeconfig, "cmp-journey-admin", &["system:masters"]).await?;
        let relabel =
            Patch::Merge(json!({"metadata": {"labels": {cmp_crds::names::ORGANIZATION_LABEL: b.organization}}}));
        let refusal = eventually("the tenancy label change refused", || async {
            match Api::<Namespace>::all(admin.clone()).patch(&a_runtime, &PatchParams::default(), &relabel).await {
                Err(kube::Error::Api(status)) if status.code == 403 => Some(status.message),
                _ => None,
            }
        })
        .await?;
        Ok(format!(
            "B's key on A's Instance: 403 {}; {b_runtime}'s {} NetworkPolicies admit no ingress from {a_runtime}; relabelling {a_runtime}: 403 ({refusal})",
            cross.code,
            policies.len()
        ))
    }

    async fn widget(&mut self) -> anyhow::Result<String> {
        let url = format!("{}/v1/widget/session:init", self.p.gateway);
        let session: Value =
            self.http.post(&url).json(&json!({"offering": self.p.demo_offering})).send().await?.json().await?;
        let token = session["token"].as_str().with_context(|| format!("no session token: {session}"))?;
        let free = session["runsPerSession"].as_i64().with_context(|| format!("no runsPerSession: {session}"))?;
        let runs = format!("{}/v1/widget/runs", self.p.gateway);
        for i in 0..free {
            let answer = self.post(&runs, None, Some(token), "try me").await?;
            ensure!(
                answer.status == 200,
                "free run {} answered {} {}: {}",
                i + 1,
                answer.status,
                answer.code,
                answer.body
            );
        }
        let over = self.post(&runs, None, Some(token), "one more").await?;
        ensure!(
            over.status == 402 && over.code == "demo_exhausted",
            "run {} answered {} {}",
            free + 1,
            over.status,
            over.code
        );
        Ok(format!("{free} free runs of {}, then 402 demo_exhausted", self.p.demo_offering))
    }

    async fn cancellation(&mut self) -> anyhow::Result<String> {
        let b = self.b.clone().context("T6 created no second buyer")?;
        let before = self.settled_wallet(&b).await?;
        let balance = before.status.as_ref().map_or(0, |s| s.balance);
        let delivered = orders::deliver(&self.http, self.p.store, &self.p.webhook, CANCELLED, &b.order, true).await?;
        let suspended = eventually("the run refused as suspended", || async {
            let answer = self.run_by_key(&b.key, "still there?").await.ok()?;
            (answer.status == 403).then_some(answer.code)
        })
        .await?;
        let after = self.wallet(&b).await?;
        // B bought only this order, so every `saleor.` grant of the Wallet is the order's.
        let order_grants: Vec<_> = after.spec.grants.iter().filter(|g| g.id.starts_with("saleor.")).collect();
        let reversed: i64 = after.spec.reversals.iter().map(|r| r.credits).sum();
        for grant in &order_grants {
            ensure!(after.spec.reversals.iter().any(|r| r.grant == grant.id), "grant {} was not reversed", grant.id);
        }
        ensure!(reversed > 0, "the cancellation withdrew nothing: {:?}", after.spec.reversals);
        let api = Api::<Wallet>::namespaced(self.p.client.clone(), &b.namespace);
        let now = eventually(&format!("the balance {balance} less the {reversed} withdrawn"), || async {
            let status = api.get(&b.organization).await.ok()?.status?;
            (status.balance == balance - reversed).then_some(status.balance)
        })
        .await?;
        Ok(format!(
            "the cancellation (answer {}) suspended {}: runs answer 403 {suspended}; {} reversals withdrew {reversed} unspent credits, balance {balance} -> {now}",
            delivered.answer,
            b.instance,
            after.spec.reversals.len()
        ))
    }
}

/// A client acting as `user` in `groups`, impersonated by the administrator of `kubeconfig`.
async fn impersonating(kubeconfig: &std::path::Path, user: &str, groups: &[&str]) -> anyhow::Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default()).await?;
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    Ok(kube::Client::try_from(config)?)
}
