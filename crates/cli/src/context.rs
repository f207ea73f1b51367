//! Global flags and the [`Context`] that turns them into configured models per role.
//!
//! Every model a command gets is layered the same way: backend (embedded or endpoint) →
//! [`MeteredModel`] (tokens and cost under the role's name, budget) → [`CachedModel`] (unless
//! `--no-cache`), so cache hits are free and a budget stop resumes from the cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context as _;
use demorecon_embedded::{EmbeddedChat, LoadOptions};
use demorecon_llm::batch::{BatchCollector, DeferredModel};
use demorecon_llm::cache::{CacheCounts, CacheMode, CachedModel, CallCache};
use demorecon_llm::ledger::{Ledger, LedgerSnapshot, MeteredModel};
use demorecon_llm::openai::OpenAiChat;
pub use demorecon_llm::roles::RoleName;
use demorecon_llm::roles::{self, BackendSpec, ConfigFile, RoleConfig};
use demorecon_llm::{ChatModel, home};

#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// TOML config: roles, endpoint limits, prices, cache, budget (see README).
    #[arg(long, global = true, env = "DEMORECON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Default backend for every role: `embedded`, `embedded:FILE.gguf` or `MODEL@URL[,URL...]`.
    #[arg(long, global = true, env = "DEMORECON_BACKEND", value_name = "SPEC")]
    pub backend: Option<String>,
    /// Backend for the generator (decompose, vary).
    #[arg(long, global = true, env = "DEMORECON_GENERATOR", value_name = "SPEC")]
    pub generator: Option<String>,
    /// Backend for the responder (FGIV-A / FGIV-R answers).
    #[arg(long, global = true, env = "DEMORECON_RESPONDER", value_name = "SPEC")]
    pub responder: Option<String>,
    /// Backend for the judge.
    #[arg(long, global = true, env = "DEMORECON_JUDGE", value_name = "SPEC")]
    pub judge: Option<String>,
    /// Backend for the model under test (chat, eval).
    #[arg(long, global = true, env = "DEMORECON_TARGET", value_name = "SPEC")]
    pub target: Option<String>,
    /// A llama-family GGUF with a chat template, used wherever a role is `embedded`.
    #[arg(
        long,
        global = true,
        env = "DEMORECON_MODEL_PATH",
        value_name = "FILE.gguf"
    )]
    pub model_path: Option<PathBuf>,
    /// CPU threads of the embedded model's engine (default: chosen per call by measurement,
    /// between 1 and every core, so it speeds up on idle cores and stays steady on busy ones).
    #[arg(long, global = true, env = "DEMORECON_THREADS", value_name = "N")]
    pub threads: Option<usize>,
    /// Environment variable that holds the endpoints' API key.
    #[arg(long, global = true, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Requests in flight per endpoint base URL.
    #[arg(long, global = true, value_name = "N")]
    pub max_concurrency: Option<usize>,
    /// Requests per minute per endpoint base URL.
    #[arg(long, global = true, value_name = "N")]
    pub rpm: Option<u32>,
    /// Tokens per minute per endpoint base URL.
    #[arg(long, global = true, value_name = "N")]
    pub tpm: Option<u32>,
    /// Per-request timeout in seconds for endpoints.
    #[arg(long, global = true, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Call cache file (SQLite). Default: $DEMORECON_HOME/cache.sqlite.
    #[arg(long, global = true, env = "DEMORECON_CACHE", value_name = "FILE")]
    pub cache: Option<PathBuf>,
    /// Bypass the call cache entirely.
    #[arg(long, global = true, conflicts_with = "offline")]
    pub no_cache: bool,
    /// Answer only from the cache; a miss is an error naming the request hash.
    #[arg(long, global = true)]
    pub offline: bool,
    /// Stop cleanly before spending more than this (needs [prices] in the config).
    #[arg(long, global = true, value_name = "USD")]
    pub budget_usd: Option<f64>,
    /// Log filter (e.g. info, debug, demorecon::access=info).
    #[arg(long, global = true, env = "DEMORECON_LOG", default_value = "warn")]
    pub log: String,
}

pub fn init_logging(args: &GlobalArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only on a terminal: logs piped to files or other programs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

pub struct Context {
    pub global: GlobalArgs,
    file: ConfigFile,
    ledger: Arc<Ledger>,
    cache: Mutex<Option<Arc<CallCache>>>,
    /// Embedded models by GGUF path (None = the default model), loaded once and shared by
    /// every role that uses them.
    embedded: Mutex<HashMap<Option<PathBuf>, EmbeddedChat>>,
    /// Set by `--batch`: endpoint calls go here instead of to the endpoint.
    batch: OnceLock<Arc<BatchCollector>>,
}

impl Context {
    pub fn new(global: GlobalArgs) -> anyhow::Result<Self> {
        let file = match &global.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        let budget = global.budget_usd.or(file.budget_usd);
        if let Some(b) = budget
            && !(b.is_finite() && b >= 0.0)
        {
            anyhow::bail!("--budget-usd must be a non-negative number, not {b}");
        }
        let ledger = Arc::new(Ledger::new(file.prices.clone(), budget));
        Ok(Self {
            global,
            file,
            ledger,
            cache: Mutex::new(None),
            embedded: Mutex::new(HashMap::new()),
            batch: OnceLock::new(),
        })
    }

    fn role_flag(&self, role: RoleName) -> Option<&str> {
        match role {
            RoleName::Generator => self.global.generator.as_deref(),
            RoleName::Responder => self.global.responder.as_deref(),
            RoleName::Judge => self.global.judge.as_deref(),
            RoleName::Target => self.global.target.as_deref(),
        }
    }

    fn endpoint_overrides(&self) -> RoleConfig {
        RoleConfig {
            backend: None,
            api_key_env: self.global.api_key_env.clone(),
            max_concurrency: self.global.max_concurrency,
            rpm: self.global.rpm,
            tpm: self.global.tpm,
            timeout_s: self.global.timeout,
            max_retries: None,
        }
    }

    /// Where the call cache lives.
    pub fn cache_path(&self) -> PathBuf {
        self.global
            .cache
            .clone()
            .or_else(|| self.file.cache.clone())
            .unwrap_or_else(|| home::data_home().join("cache.sqlite"))
    }

    /// The process's call cache, opened on first use; `None` with `--no-cache`.
    pub fn cache(&self) -> anyhow::Result<Option<Arc<CallCache>>> {
        if self.global.no_cache {
            return Ok(None);
        }
        let mut slot = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let mode = if self.global.offline {
                CacheMode::Offline
            } else {
                CacheMode::ReadWrite
            };
            let path = self.cache_path();
            let cache = CallCache::open(&path, mode)
                .with_context(|| format!("opening the cache {}", path.display()))?;
            *slot = Some(Arc::new(cache));
        }
        Ok(slot.clone())
    }

    pub fn cache_counts(&self) -> CacheCounts {
        let slot = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().map(|c| c.counts()).unwrap_or_default()
    }

    /// Prices per model from the config's `[prices]`.
    pub fn prices(&self) -> &demorecon_llm::ledger::PriceTable {
        &self.file.prices
    }

    pub fn ledger(&self) -> LedgerSnapshot {
        self.ledger.snapshot()
    }

    /// A closing line on stderr for commands that made several model calls: cache hits and
    /// misses, tokens and cost per role and model.
    pub fn print_usage_summary(&self) {
        let counts = self.cache_counts();
        let ledger = self.ledger();
        if counts.hits + counts.misses <= 1
            && ledger.by_role.values().map(|m| m.len()).sum::<usize>() <= 1
        {
            return;
        }
        eprintln!("cache: {} hits, {} misses", counts.hits, counts.misses);
        let embedded = self.embedded.lock().unwrap_or_else(|p| p.into_inner());
        for chat in embedded.values() {
            let stats = chat.stats();
            if stats.engine_calls > 0 {
                eprintln!("embedded {}: {stats}", chat.name());
            }
        }
        drop(embedded);
        for (role, models) in &ledger.by_role {
            for (model, t) in models {
                eprintln!(
                    "{role:>10} {model}: {} calls, {} prompt + {} completion tokens, ${:.4}",
                    t.calls, t.prompt_tokens, t.completion_tokens, t.cost_usd
                );
            }
        }
    }

    /// How a role is configured, after flags, env, config file and defaults.
    pub fn spec_for(
        &self,
        role: RoleName,
        override_spec: Option<&str>,
    ) -> anyhow::Result<BackendSpec> {
        let flag = override_spec.or_else(|| self.role_flag(role));
        let spec = roles::resolve(
            role,
            flag,
            self.global.backend.as_deref(),
            &self.file,
            &self.endpoint_overrides(),
        )?;
        Ok(match spec {
            BackendSpec::Embedded { model_path: None } => BackendSpec::Embedded {
                model_path: self.global.model_path.clone(),
            },
            other => other,
        })
    }

    /// A role's spec as a short label for summaries and reports: `embedded`,
    /// `embedded:PATH` (as given) or `MODEL@URL` (the first replica; never a key).
    pub fn spec_label(
        &self,
        role: RoleName,
        override_spec: Option<&str>,
    ) -> anyhow::Result<String> {
        Ok(match self.spec_for(role, override_spec)? {
            BackendSpec::Embedded { model_path: None } => "embedded".into(),
            BackendSpec::Embedded {
                model_path: Some(p),
            } => format!("embedded:{}", p.display()),
            BackendSpec::Endpoint(cfg) => format!(
                "{}@{}",
                cfg.model,
                cfg.base_urls.first().map(String::as_str).unwrap_or("")
            ),
        })
    }

    /// The embedded model at `path` (or the default one), loaded once per process.
    pub fn embedded(&self, path: Option<&Path>) -> anyhow::Result<EmbeddedChat> {
        let key = path.map(Path::to_owned);
        let mut loaded = self.embedded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(model) = loaded.get(&key) {
            return Ok(model.clone());
        }
        let options = LoadOptions {
            threads: self.global.threads,
            ..LoadOptions::default()
        };
        let model = match path {
            Some(path) => EmbeddedChat::load(path, &options)?,
            None => EmbeddedChat::load_default(&options)?,
        };
        loaded.insert(key, model.clone());
        Ok(model)
    }

    /// From now on, models built for endpoint roles write their cache misses to the returned
    /// collector instead of calling (`--batch`); embedded roles still answer in process.
    pub fn defer_to_batch(&self) -> anyhow::Result<Arc<BatchCollector>> {
        if self.global.no_cache || self.global.offline {
            anyhow::bail!(
                "--batch needs the call cache (its answers are imported into it): drop --no-cache / --offline"
            );
        }
        Ok(self.batch.get_or_init(BatchCollector::new).clone())
    }

    /// The backend alone, without cache or ledger (what `serve` wraps itself).
    pub fn backend(&self, spec: &BackendSpec) -> anyhow::Result<Arc<dyn ChatModel>> {
        Ok(match spec {
            BackendSpec::Embedded { model_path } => {
                if self.global.offline {
                    // Offline runs answer from the cache; don't load (or fetch) weights for it.
                    return Ok(Arc::new(OfflineOnly(
                        self.embedded_identity(model_path.as_deref())?,
                    )));
                }
                Arc::new(self.embedded(model_path.as_deref())?)
            }
            BackendSpec::Endpoint(cfg) => {
                let endpoint = OpenAiChat::new(cfg.clone())?;
                match self.batch.get() {
                    Some(batch) => Arc::new(DeferredModel::new(Arc::new(endpoint), batch.clone())),
                    None => Arc::new(endpoint),
                }
            }
        })
    }

    fn embedded_identity(
        &self,
        path: Option<&Path>,
    ) -> anyhow::Result<demorecon_llm::BackendIdentity> {
        let path = match path {
            Some(p) => p.to_owned(),
            None => demorecon_gguf::store::model_path(&home::data_home()),
        };
        demorecon_embedded::identity_of(&path).with_context(|| {
            format!(
                "--offline needs the model file to know its identity: {}",
                path.display()
            )
        })
    }

    /// The configured model for a role, metered and cached. `override_spec` (e.g. a command's
    /// `--model`) wins over every other source.
    pub fn model_for(
        &self,
        role: RoleName,
        override_spec: Option<&str>,
    ) -> anyhow::Result<Arc<dyn ChatModel>> {
        let spec = self.spec_for(role, override_spec)?;
        let backend = self.backend(&spec)?;
        let metered: Arc<dyn ChatModel> = Arc::new(MeteredModel::new(
            backend,
            role.as_str(),
            self.ledger.clone(),
        ));
        Ok(match self.cache()? {
            Some(cache) => Arc::new(CachedModel::new(metered, cache)),
            None => metered,
        })
    }
}

/// Stands in for the embedded model under `--offline`: it has the real identity (so cache keys
/// match) but never generates.
struct OfflineOnly(demorecon_llm::BackendIdentity);

#[async_trait::async_trait]
impl ChatModel for OfflineOnly {
    fn identity(&self) -> demorecon_llm::BackendIdentity {
        self.0.clone()
    }

    async fn chat(
        &self,
        req: &demorecon_llm::ChatRequest,
        _: Option<demorecon_llm::TokenSink>,
    ) -> Result<demorecon_llm::ChatResponse, demorecon_llm::LlmError> {
        Err(demorecon_llm::LlmError::OfflineMiss {
            hash: demorecon_llm::cache::request_key(&self.0, req),
        })
    }
}
