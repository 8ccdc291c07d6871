//! The trivial upstream of `cargo xtask bench-gateway`: the
//! `LangflowStandIn` (Langflow's flow registration and v1 run API, and an
//! OpenAI-shaped `/v1/chat/completions` for LiteLLM), in its own process.
//!
//! `bench-upstream <addr> <api-key>`

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(key)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bench-upstream <addr> <api-key>");
    };
    cmp_testenv::langflow_stand_in::serve_forever(&key, addr.parse()?).await?;
    Ok(())
}
