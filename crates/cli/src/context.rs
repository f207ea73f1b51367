//! Global flags and the [`Context`] that turns them into configured models per role.

use std::sync::Arc;

use demorecon_llm::ChatModel;

#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Log level filter (e.g. info, debug, demorecon_llm=trace).
    #[arg(long, global = true, env = "DEMORECON_LOG", default_value = "warn")]
    pub log: String,
}

pub fn init_logging(args: &GlobalArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Which job a model does; each is configured on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleName {
    Generator,
    Responder,
    Judge,
    ModelUnderTest,
}

pub struct Context {
    pub global: GlobalArgs,
}

impl Context {
    pub fn new(global: GlobalArgs) -> anyhow::Result<Self> {
        Ok(Self { global })
    }

    /// The configured model for a role, wrapped in the cache and the ledger.
    pub fn model_for(&self, role: RoleName) -> anyhow::Result<Arc<dyn ChatModel>> {
        anyhow::bail!("model for role {role:?}: backend wiring not built yet")
    }
}
