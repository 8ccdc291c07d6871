//! The command line of `cmp-gateway`: the process flags shared by every CMP
//! binary, and its own settings.

use clap::Parser;
use cmp_core::runtime::ProcessArgs;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "The CMP gateway: authorizes agent runs against the CRs, rate-limits them, pays for them from credits leased on the Wallet and forwards them to the runtimes."
)]
pub struct Args {
    #[command(flatten)]
    pub process: ProcessArgs,
    /// Address of the run API.
    #[arg(long, env = "CMP_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// This replica's name (the pod name); a random suffix per process start makes its meter name.
    #[arg(long, env = "POD_NAME", default_value = "cmp-gateway")]
    pub replica_name: String,
    /// A credit lease's lifetime beyond the longest run it pays for: how long a dead replica's lease stays away.
    #[arg(long, env = "CMP_GATEWAY_LEASE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_seconds: u64,
    /// How long a run waits for a lease when the replica holds none.
    #[arg(long, env = "CMP_GATEWAY_LEASE_WAIT_MS", default_value_t = 3000)]
    pub lease_wait_ms: u64,
    /// How often spending is written to the Wallet meters.
    #[arg(long, env = "CMP_GATEWAY_FLUSH_MS", default_value_t = 1000)]
    pub flush_ms: u64,
    /// After this long without runs on a Wallet, its lease is handed back.
    #[arg(long, env = "CMP_GATEWAY_IDLE_SECONDS", default_value_t = 30)]
    pub idle_seconds: u64,
    /// The largest run body taken.
    #[arg(long, env = "CMP_GATEWAY_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Append usage events to this file (one CloudEvent per line).
    #[arg(long, env = "CMP_GATEWAY_USAGE_FILE", conflicts_with = "usage_url")]
    pub usage_file: Option<PathBuf>,
    /// POST usage events to this URL (OpenMeter's ingest format).
    #[arg(long, env = "CMP_GATEWAY_USAGE_URL")]
    pub usage_url: Option<String>,
    /// The namespace of the replicas' peer Leases.
    #[arg(long, env = "POD_NAMESPACE", default_value = "cmp-system")]
    pub namespace: String,
    /// Where the peer endpoint listens. Set it when more than one replica runs,
    /// so that rate limits hold across them; unset, this replica limits alone.
    #[arg(long, env = "CMP_GATEWAY_PEER_ADDR")]
    pub peer_addr: Option<SocketAddr>,
    /// The URL the other replicas reach the peer endpoint at. Default: http://<--peer-addr>.
    #[arg(long, env = "CMP_GATEWAY_PEER_URL")]
    pub peer_url: Option<String>,
    /// The replicas that share rate limits (one gateway Deployment).
    #[arg(long, env = "CMP_GATEWAY_PEER_GROUP", default_value = "cmp-gateway")]
    pub peer_group: String,
    /// Accept OIDC access tokens of this issuer (`iss`) from first-party callers, beside API keys.
    #[arg(long, env = "CMP_GATEWAY_OIDC_ISSUER", requires = "oidc_audience")]
    pub oidc_issuer: Option<String>,
    /// The audience (`aud`) tokens must name.
    #[arg(long, env = "CMP_GATEWAY_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// The issuer's JWKS URL. Default: `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    #[arg(long, env = "CMP_GATEWAY_OIDC_JWKS_URL")]
    pub oidc_jwks_url: Option<String>,
    /// The claim that names the caller as Organizations list it (like kube-apiserver's --oidc-username-claim).
    #[arg(long, env = "CMP_GATEWAY_OIDC_USERNAME_CLAIM", default_value = "sub")]
    pub oidc_username_claim: String,
    /// The claim that lists the caller's groups.
    #[arg(long, env = "CMP_GATEWAY_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,
    /// The issuer's JWKS is fetched again (for an unknown key id) at most this often.
    #[arg(long, env = "CMP_GATEWAY_OIDC_MIN_REFETCH_SECONDS", default_value_t = 10)]
    pub oidc_min_refetch_seconds: u64,
    /// Sign-up on first login: a caller with a valid OIDC token whom no Organization lists gets one of their own on
    /// `GET /v1/me` (owner: the token's user name; named after its issuer and sub), with the default Project.
    /// Needs --oidc-issuer, and the chart's gateway.signup.enabled (the rights to create them).
    #[arg(long, env = "CMP_GATEWAY_SIGNUP", requires = "oidc_issuer")]
    pub signup: bool,
    /// The starter credits of an Organization a sign-up creates (its spec.starterCredits). Unset: the operator's
    /// --starter-credits.
    #[arg(long, env = "CMP_GATEWAY_SIGNUP_STARTER_CREDITS", value_parser = clap::value_parser!(i64).range(0..))]
    pub signup_starter_credits: Option<i64>,
    /// The buyer API on the caller's Organizations (/v1/me/organizations/{organization}/...: Instances, API keys, the
    /// Wallet), asked as the caller by impersonation of their user name and groups. Needs --oidc-issuer, and the
    /// chart's gateway.buyerApi.enabled (the right to impersonate users and groups).
    #[arg(long, env = "CMP_GATEWAY_BUYER_API", requires = "oidc_issuer")]
    pub buyer_api: bool,
    /// The buyer console at /console/, signing buyers in as this public client of the identity provider
    /// (authorization code with PKCE; the client must list <gateway>/console/ as a redirect URI and the gateway's
    /// origin as a web origin). Needs --buyer-api. Unset: no console.
    #[arg(long, env = "CMP_GATEWAY_CONSOLE_CLIENT_ID", requires = "buyer_api")]
    pub console_client_id: Option<String>,
    /// A label (key=value) put on every Organization a sign-up creates; repeat for more.
    #[arg(long = "signup-organization-label", env = "CMP_GATEWAY_SIGNUP_ORGANIZATION_LABELS", value_delimiter = ',', value_parser = cmp_core::labels::parse_label)]
    pub signup_organization_labels: Vec<(String, String)>,
    /// Sign-ups this replica makes per minute, at most (and as many at once); over it, 429 with Retry-After.
    #[arg(long, env = "CMP_GATEWAY_SIGNUP_PER_MINUTE", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub signup_per_minute: u32,
    /// The secret widget demo session tokens are signed with, the same on every replica (from a Secret). Unset: no widget sessions.
    #[arg(long, env = "CMP_GATEWAY_WIDGET_SECRET", hide_env_values = true)]
    pub widget_secret: Option<String>,
    /// How long a widget demo session lasts.
    #[arg(long, env = "CMP_GATEWAY_WIDGET_SESSION_SECONDS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(60..=86400))]
    pub widget_session_seconds: u64,
    /// The header that carries a widget client's address behind a trusted ingress (for example x-forwarded-for). Unset: the connection's address.
    #[arg(long, env = "CMP_GATEWAY_CLIENT_ADDRESS_HEADER")]
    pub client_address_header: Option<String>,
    /// The secret run tokens and MCP session ids are signed with, the same on every replica (from a Secret), at least 32 characters. Unset: the connector gateway is off and runs get no run token.
    #[arg(long, env = "CMP_GATEWAY_RUN_TOKEN_SECRET", hide_env_values = true)]
    pub run_token_secret: Option<String>,
    /// The hosts connector bindings may call (comma-separated): "tools.example.com", or "*.example.com" for every host below a domain. Empty: no binding may be called.
    #[arg(long, env = "CMP_GATEWAY_CONNECTOR_ALLOWED_HOSTS", value_delimiter = ',')]
    pub connector_allowed_hosts: Vec<String>,
    /// The networks no binding may reach, whatever its host resolves to (comma-separated CIDRs). Default: loopback, link-local, private and shared ranges; set it to replace them (add the cluster's pod and service ranges when they are public addresses).
    #[arg(long, env = "CMP_GATEWAY_CONNECTOR_DENIED_NETWORKS", value_delimiter = ',')]
    pub connector_denied_networks: Option<Vec<String>>,
    /// Endpoints no binding may reach, beside the API server, OpenBao, the runtimes and this gateway, which are always denied (comma-separated URLs or host:port).
    #[arg(long, env = "CMP_GATEWAY_CONNECTOR_DENIED_ENDPOINTS", value_delimiter = ',')]
    pub connector_denied_endpoints: Vec<String>,
    /// How often each connector binding's MCP server is probed (initialize and tools/list, with the binding's own credential) for its Instance's status; a new or changed binding within seconds. 0: never.
    #[arg(long, env = "CMP_GATEWAY_CONNECTOR_PROBE_SECONDS", default_value_t = 300)]
    pub connector_probe_seconds: u64,
    /// Probe only the bindings of Organizations whose labels match this equality selector ("key=value,..."), as the operator's --organization-selector when several CMP installs share a cluster. Empty: all.
    #[arg(long, env = "CMP_GATEWAY_CONNECTOR_PROBE_ORGANIZATION_SELECTOR", default_value = "")]
    pub connector_probe_organization_selector: crate::connectors::probe::OrganizationSelector,
    /// The OpenBao (Vault) address connector credentials are read from. Unset: bindings cannot be called.
    #[arg(long, env = "VAULT_ADDR")]
    pub vault_addr: Option<String>,
    /// A token to read OpenBao with (development); in a cluster use Kubernetes auth (--vault-role).
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true, conflicts_with = "vault_role")]
    pub vault_token: Option<String>,
    /// The Kubernetes-auth role the gateway logs in to OpenBao with (the operator writes it).
    #[arg(long, env = "CMP_GATEWAY_VAULT_ROLE")]
    pub vault_role: Option<String>,
    /// The path of OpenBao's Kubernetes auth method.
    #[arg(long, env = "CMP_GATEWAY_VAULT_KUBERNETES_AUTH", default_value = "kubernetes")]
    pub vault_kubernetes_auth: String,
    /// The ServiceAccount token the gateway logs in with.
    #[arg(
        long,
        env = "CMP_GATEWAY_VAULT_JWT_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub vault_jwt_file: PathBuf,
    /// The KV v2 mount of the connector secrets.
    #[arg(long, env = "CMP_GATEWAY_VAULT_MOUNT", default_value = "secret")]
    pub vault_mount: String,
    /// The knowledge store, PostgreSQL with pgvector, as the gateway's own login role
    /// (postgres://user:password@host:port/database): a role with no rights of its own, which the operator grants
    /// each Project's role. Unset: no knowledge base (uploads are refused, and the knowledge binding answers nothing).
    #[arg(long, env = "CMP_GATEWAY_KNOWLEDGE_STORE_URL", hide_env_values = true, requires = "knowledge_model_dir")]
    pub knowledge_store_url: Option<String>,
    /// The directory of the embedding model, all-MiniLM-L6-v2 (config.json, tokenizer.json, model.safetensors).
    #[arg(long, env = "CMP_GATEWAY_KNOWLEDGE_MODEL_DIR", requires = "knowledge_store_url")]
    pub knowledge_model_dir: Option<PathBuf>,
    /// How many connections to the knowledge store are kept open between calls.
    #[arg(long, env = "CMP_GATEWAY_KNOWLEDGE_STORE_CONNECTIONS", default_value_t = 8)]
    pub knowledge_store_connections: usize,
    /// How many usage events wait for the sink before new ones are dropped.
    #[arg(long, env = "CMP_GATEWAY_USAGE_BUFFER", default_value_t = 100_000)]
    pub usage_buffer: usize,
}
