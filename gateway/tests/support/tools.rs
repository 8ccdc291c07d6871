//! What the connector gateway's tests share: a real OpenBao whose Kubernetes
//! auth the gateway logs in to as its own ServiceAccount (role
//! `cmp.gateway.connectors`, written by the real operator), the operator,
//! and the ticket desk (a real MCP server that checks the credential it
//! receives), with each tenant's credential at its binding's path.

use cmp_testenv::mcp::TicketDesk;
use cmp_testenv::openbao::OpenBao;
use cmp_testenv::process::TestProcess;
use cmp_testenv::test::{TestNamespace, gateway_service_account, service_account_token, test_kubeconfig};

use super::{Gateway, World};

/// The secret every replica signs run tokens with.
pub const RUN_TOKEN_SECRET: &str = "a run-token secret every replica shares";
/// Tenant `a`'s ticket-desk credential.
pub const ALPHA_SECRET: &str = "alpha-ticket-credential-7f3a";
/// Tenant `b`'s ticket-desk credential.
pub const BETA_SECRET: &str = "beta-ticket-credential-91c2";

/// OpenBao, the operator and the ticket desk, for one test's World.
pub struct ConnectorParts {
    pub bao: OpenBao,
    pub operator: TestProcess,
    pub desk: TicketDesk,
    jwt_file: String,
    _gateway_ns: TestNamespace,
}

impl ConnectorParts {
    /// Starts them; the desk answers `Bearer <ALPHA_SECRET>` as alpha and `Bearer <BETA_SECRET>` as beta.
    pub async fn start(w: &World) -> Self {
        let scratch = std::env::temp_dir().join(format!("{}-mcp", w.run));
        std::fs::create_dir_all(&scratch).expect("a scratch directory");
        let bao = OpenBao::start(&scratch.join("bao"), "cmp-test-root").await.expect("OpenBao starts");
        bao.enable_kubernetes_auth(&w.client, &test_kubeconfig()).await.expect("Kubernetes auth");
        // The gateway's ServiceAccount; the operator writes the OpenBao role it logs in to.
        let (gateway_ns, account) =
            gateway_service_account(&w.client, "mcp-gateway").await.expect("the gateway's ServiceAccount");
        let operator = w.operator_with(&[
            "--vault-addr",
            bao.addr(),
            "--vault-token",
            bao.token(),
            "--vault-gateway-service-account",
            &account,
            "--connector-allowed-hosts",
            "localhost,127.0.0.1",
        ]);
        let desk = TicketDesk::start(
            &[(&format!("Bearer {ALPHA_SECRET}"), "alpha"), (&format!("Bearer {BETA_SECRET}"), "beta")],
            "authorization",
            scratch.join("tickets.log"),
        )
        .await
        .expect("the MCP ticket desk starts");
        let jwt = service_account_token(&w.client, &gateway_ns.name, "cmp-gateway", None).await.expect("a token");
        let jwt_file = scratch.join("gateway.jwt");
        std::fs::write(&jwt_file, jwt).expect("the gateway's ServiceAccount token");
        let jwt_file = jwt_file.display().to_string();
        Self { bao, operator, desk, jwt_file, _gateway_ns: gateway_ns }
    }

    /// Writes `secret` as the credential of `org`'s Project `support` binding `binding`; returns its path.
    pub fn credential(&self, org: &str, binding: &str, secret: &str) -> String {
        let path = format!("connectors/{org}/support/{binding}");
        self.bao.run(&["kv", "put", "-mount=secret", &path, &format!("token={secret}")]).expect("the credential");
        path
    }

    /// The desk's MCP endpoint, by a host name on the allow-list.
    pub fn desk_url(&self) -> String {
        format!("http://localhost:{}/mcp", self.desk.port())
    }

    /// Starts gateway `replica` of `w` with the connector gateway on; `extra` adds flags.
    pub async fn gateway(&self, w: &World, replica: &str, extra: &[&str]) -> Gateway {
        // Only this test's Organizations are probed: other tests' bindings read their own OpenBao.
        let selector = format!("{}={}", super::RUN_LABEL, w.run);
        let mut flags = vec![
            "--connector-probe-organization-selector",
            &selector,
            "--run-token-secret",
            RUN_TOKEN_SECRET,
            "--connector-allowed-hosts",
            "localhost,127.0.0.1",
            // Every server of these tests listens on loopback, so loopback is not a denied network here; the
            // API server, OpenBao and the runtime are still denied by their endpoints.
            "--connector-denied-networks",
            "169.254.0.0/16",
            "--vault-addr",
            self.bao.addr(),
            "--vault-role",
            cmp_crds::names::GATEWAY_CONNECTOR_ROLE,
            "--vault-jwt-file",
            &self.jwt_file,
        ];
        flags.extend_from_slice(extra);
        w.gateway(replica, &flags).await
    }
}
