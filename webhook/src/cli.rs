//! The command line of `cmp-webhook`: the process flags shared by every CMP
//! binary, and its own settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use cmp_core::runtime::ProcessArgs;

#[derive(Parser)]
#[command(
    version,
    about = "The CMP webhook: turns paid Saleor orders into CRs, and serves validating admission for the rules CEL cannot express."
)]
pub struct Args {
    #[command(flatten)]
    pub process: ProcessArgs,

    /// Address of the Saleor routes (manifest, registration, webhooks).
    #[arg(long, env = "CMP_SALEOR_ADDR", default_value = "127.0.0.1:8090")]
    pub saleor_addr: SocketAddr,

    /// The URL Saleor reaches the Saleor routes at, written into the app manifest.
    #[arg(long, env = "CMP_PUBLIC_URL", default_value = "http://127.0.0.1:8090")]
    pub public_url: String,

    /// A store's API URL, exactly as Saleor sends it in Saleor-Api-Url (repeat, or comma-separate). Deliveries from any other are refused with 401.
    #[arg(long = "saleor-api-url", env = "CMP_SALEOR_API_URLS", value_delimiter = ',')]
    pub saleor_api_urls: Vec<String>,

    /// The legacy HMAC-SHA256 shared secret. Unset: only JWS signatures are accepted.
    #[arg(long, env = "CMP_SALEOR_HMAC_SECRET", hide_env_values = true)]
    pub saleor_hmac_secret: Option<String>,

    /// The credit-pack file: `creditPacks: [{sku, credits, displayName}]`. Unset: no credit packs.
    #[arg(long, env = "CMP_CREDIT_PACKS")]
    pub credit_packs: Option<PathBuf>,

    /// The largest delivery body accepted; larger ones get 413.
    #[arg(long, env = "CMP_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// How long a paid order waits for the operator to create the buyer's Wallet before answering 503 (Saleor retries).
    #[arg(long, env = "CMP_WALLET_WAIT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=15))]
    pub wallet_wait_seconds: u64,

    /// The least time between two fetches of one store's JWKS.
    #[arg(long, env = "CMP_JWKS_MIN_REFETCH_SECONDS", default_value_t = 10)]
    pub jwks_min_refetch_seconds: u64,

    /// A label (key=value) put on every Organization the provisioner creates; repeat for more.
    #[arg(long = "organization-label", env = "CMP_ORGANIZATION_LABELS", value_delimiter = ',', value_parser = cmp_core::labels::parse_label)]
    pub organization_labels: Vec<(String, String)>,

    /// Address of the validating admission endpoint (TLS), served when --admission-cert and --admission-key are given.
    #[arg(long, env = "CMP_ADMISSION_ADDR", default_value = "127.0.0.1:8443")]
    pub admission_addr: SocketAddr,

    /// PEM certificate (chain) of the admission endpoint. Unset: no admission endpoint.
    #[arg(long, env = "CMP_ADMISSION_CERT", requires = "admission_key")]
    pub admission_cert: Option<PathBuf>,

    /// PEM private key of the admission endpoint.
    #[arg(long, env = "CMP_ADMISSION_KEY", requires = "admission_cert")]
    pub admission_key: Option<PathBuf>,

    /// A user name (as the API server authenticates it) allowed to append grants from SaleorOrder: the provisioner's own. Repeat for more.
    #[arg(
        long = "provisioner-username",
        env = "CMP_PROVISIONER_USERNAMES",
        value_delimiter = ',',
        default_value = "system:serviceaccount:cmp-system:cmp-webhook"
    )]
    pub provisioner_usernames: Vec<String>,

    /// The namespace of the Secrets that keep the stores' app tokens, and of the records of withdrawn orders.
    #[arg(long, env = "CMP_NAMESPACE", default_value = "cmp-system")]
    pub namespace: String,

    /// How long the record of a cancelled or fully refunded order is kept (a payment of it delivered within this time is never provisioned).
    #[arg(long, env = "CMP_ORDER_RECORD_RETENTION_DAYS", default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..))]
    pub order_record_retention_days: u64,

    /// The least time between two updates of one store's webhooks (made when the store sends an older install's queries).
    #[arg(long, env = "CMP_WEBHOOK_SYNC_INTERVAL_SECONDS", default_value_t = 600)]
    pub webhook_sync_interval_seconds: u64,
}
