//! `demorecon serve`: the target role's model behind an OpenAI-compatible HTTP API.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use demorecon_llm::roles::RoleName;

use crate::context::Context;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to bind. Loopback by default; anything else exposes the model to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/*.
    #[arg(
        long,
        env = "DEMORECON_SERVE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Name clients use in `model` (default: the model's own id).
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,
    /// Backend to serve (overrides --target).
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
    /// Requests admitted at once, running or waiting; past this the server answers 503.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Largest request body accepted, in bytes (413 past it).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors, e.g. the
    /// `adapter/` of `demorecon train`) applied to the embedded model at load.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
}

pub async fn run(args: ServeArgs, ctx: &Context) -> anyhow::Result<()> {
    // The same cached, metered model every command gets: a repeated request is answered at
    // once from the cache, and served tokens count in the ledger under the target role.
    let spec = crate::adapter::model_spec(args.adapter.as_deref(), args.model.as_deref(), ctx)?;
    // Identical requests arriving together are computed once.
    let model: std::sync::Arc<dyn demorecon_llm::ChatModel> =
        std::sync::Arc::new(demorecon_llm::single_flight::SingleFlight::new(
            ctx.model_for(RoleName::Target, spec.as_deref())?,
        ));
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| model.identity().model);
    let state =
        demorecon_serve::AppState::new(model, name.clone(), args.api_key.clone(), args.queue);
    let app = demorecon_serve::router(state, args.max_body_bytes);
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    eprintln!(
        "demorecon serve: http://{bound}/v1 (model {name:?}{})",
        if args.api_key.is_some() {
            ", bearer token required"
        } else {
            ""
        }
    );
    demorecon_serve::serve(listener, app, shutdown_signal()).await?;
    eprintln!("demorecon serve: stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C, so in-flight requests can finish before exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("demorecon serve: shutting down, finishing requests in flight");
}
