//! The `demorecon` binary: argument parsing and wiring only. Each subcommand lives in its own
//! `cmd_*` module and calls into the library crates; [`context::Context`] turns the global flags
//! into configured models (roles, cache, ledger).

mod adapter;
mod cmd_batch;
mod cmd_cache;
mod cmd_chat;
mod cmd_eval;
mod cmd_export;
mod cmd_model;
mod cmd_report;
mod cmd_run;
mod cmd_serve;
mod cmd_train;
mod context;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "demorecon",
    version,
    about = "Fine-grained instruction variants (DeMoRecon): build data, train, serve and evaluate instruction following.",
    after_help = "Backends: every role (generator, responder, judge, target) is `embedded` (default, in-process SmolLM2), \
`embedded:FILE.gguf`, or an OpenAI-compatible endpoint `MODEL@http://HOST:PORT/v1` (comma-separate replicas)."
)]
struct Cli {
    #[command(flatten)]
    global: context::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole DeMoRecon pipeline: filter → decompose → vary → respond (FGIV-A and FGIV-R) →
    /// verify → build datasets. An existing run folder is resumed.
    Run(cmd_run::RunArgs),
    // `filter`, `decompose`, `vary`, `respond`, `verify`: one per stage of the pipeline's graph.
    #[command(flatten)]
    Stage(cmd_run::StageCommand),
    /// Rebuild a run folder's files and datasets from its state.
    Build(cmd_run::BuildCommandArgs),
    /// Merge the run folders of every shard (`--shard`; folders or a glob) into one.
    Merge(cmd_run::MergeArgs),
    /// Send one prompt to a model and stream the answer.
    Chat(cmd_chat::ChatArgs),
    /// Serve a model over an OpenAI-compatible HTTP API.
    Serve(cmd_serve::ServeArgs),
    /// Fine-tune the embedded model family with LoRA: SFT, DPO or both in one loss.
    Train(Box<cmd_train::TrainArgs>),
    /// Export a finished run for TRL, LLaMA-Factory, axolotl or OpenRLHF: their own SFT, DPO
    /// and KTO rows, Parquet, an SFT+DPO config and a dataset card.
    Export(cmd_export::ExportArgs),
    /// Score a model on a benchmark: IFEval, FGIV-Eval, InFoBench, FollowBench.
    #[command(subcommand)]
    Eval(cmd_eval::EvalCommand),
    /// One self-contained HTML page over eval, run and train folders: models side by side with
    /// 95 % intervals, paired tests, the pipeline funnel and training curves.
    Report(cmd_report::ReportArgs),
    /// Manage the embedded model (fetch, path).
    #[command(subcommand)]
    Model(cmd_model::ModelCommand),
    /// Import the results of batch files written by `run --batch` into the call cache.
    #[command(subcommand)]
    Batch(cmd_batch::BatchCommand),
    /// Inspect the call cache; merge cache files (one per shard) into one.
    #[command(subcommand)]
    Cache(cmd_cache::CacheCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Train(args) = &cli.command
        && let Some(threads) = args.threads
    {
        // candle's matrix code and rayon's pool read RAYON_NUM_THREADS when they start.
        // SAFETY: no other thread exists yet (the async runtime is built below), so nothing
        // reads the environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string()) };
    }
    context::init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let ctx = context::Context::new(cli.global)?;
        let result = match cli.command {
            Command::Run(args) => cmd_run::run(args, &ctx).await,
            Command::Stage(cmd) => cmd_run::stage(cmd, &ctx).await,
            Command::Build(args) => cmd_run::build_only(args, &ctx),
            Command::Merge(args) => cmd_run::merge(args, &ctx),
            Command::Chat(args) => cmd_chat::run(args, &ctx).await,
            Command::Serve(args) => cmd_serve::run(args, &ctx).await,
            Command::Train(args) => cmd_train::run(*args, &ctx),
            Command::Eval(cmd) => cmd_eval::run(cmd, &ctx).await,
            Command::Report(args) => cmd_report::run(args),
            Command::Export(args) => cmd_export::run(args),
            Command::Model(cmd) => cmd_model::run(cmd),
            Command::Cache(cmd) => cmd_cache::run(cmd, &ctx),
            Command::Batch(cmd) => cmd_batch::run(cmd, &ctx),
        };
        ctx.print_usage_summary();
        result
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
