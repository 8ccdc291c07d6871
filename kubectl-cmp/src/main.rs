//! `kubectl cmp`: a kubectl plugin for CMP. It follows a Saleor order or an
//! Instance to its running agent (`trace`), issues, rotates and revokes API
//! keys (`keys`), shows a Wallet (`wallet`) and runs an agent through the
//! gateway (`run`). It uses the current kubeconfig context and its namespace
//! (`-n` and `--context` override them), like kubectl.
//!
//! Exit codes: 0 done; 1 an error (the message says what to do); 2 bad usage;
//! 3 the answer is a problem: `trace` found something wrong or pending, or
//! the gateway refused the run.

mod error;
mod keys;
mod output;
mod run;
mod trace;
mod wallet;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::Error;
use crate::output::Format;

#[derive(Parser)]
#[command(name = "kubectl-cmp", bin_name = "kubectl cmp", version, about)]
struct Cli {
    /// The namespace of the Instance (default: the kubeconfig context's, else `default`).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The chain from a Saleor order (its id or number) or an Instance to its running agent, each link with its
    /// status and the first thing that is wrong.
    Trace {
        /// A Saleor order id or number, or an Instance name.
        target: String,
        /// Argo CD's namespace, where the Projects' Applications live.
        #[arg(long, default_value = "argocd")]
        argocd_namespace: String,
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// API keys of an Instance: a new key is printed once.
    Keys {
        #[command(subcommand)]
        action: keys::Action,
    },
    /// An Organization's Wallet: balance, grants, reversals, gateway meters and their leases.
    Wallet {
        /// The Organization.
        organization: String,
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Runs an Instance's agent once through the gateway.
    Run {
        /// The Instance.
        instance: String,
        /// The input, sent as `input_value`.
        input: String,
        /// The gateway's URL.
        #[arg(long, env = "CMP_GATEWAY_URL", default_value = "http://127.0.0.1:8000")]
        gateway: String,
        /// The API key to use; default: the plaintext of `--key-name` from its Secret.
        #[arg(long, env = "CMP_API_KEY", hide_env_values = true)]
        key: Option<String>,
        /// Which of the Instance's keys to read when `--key` is not given; default: its first key not revoked.
        #[arg(long)]
        key_name: Option<String>,
        /// `text` prints the agent's answer; `json` and `yaml` the gateway's whole response.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
}

/// The client and namespace the kubeconfig (and the flags) give.
pub struct Target {
    pub client: kube::Client,
    pub namespace: String,
}

async fn connect(context: Option<String>, namespace: Option<String>) -> Result<Target, Error> {
    let options = kube::config::KubeConfigOptions { context, ..Default::default() };
    let config = kube::Config::from_kubeconfig(&options).await.map_err(Error::Kubeconfig)?;
    let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(Error::Kube)?;
    Ok(Target { client, namespace })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider for the process: with more than one compiled in (a workspace build unifies features),
    // rustls cannot choose by itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match connect(cli.context, cli.namespace).await {
        Ok(target) => match cli.command {
            Command::Trace { target: what, argocd_namespace, output } => {
                trace::trace(&target, &what, &argocd_namespace, output).await
            }
            Command::Keys { action } => keys::run(&target, action).await,
            Command::Wallet { organization, output } => wallet::show(&target, &organization, output).await,
            Command::Run { instance, input, gateway, key, key_name, output } => {
                run::run(&target, &instance, &input, &gateway, key, key_name.as_deref(), output).await
            }
        },
        Err(error) => Err(error),
    };
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
    }
}

/// How a command ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// All is well.
    Done,
    /// The answer is a problem (exit code 3): what `trace` found, or a refused run.
    Problem,
}

impl Outcome {
    fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::Done => ExitCode::SUCCESS,
            Outcome::Problem => ExitCode::from(3),
        }
    }
}
