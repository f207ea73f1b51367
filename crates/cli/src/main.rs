//! The `demorecon` binary: argument parsing and wiring only. Each subcommand lives in its own
//! `cmd_*` module and calls into the library crates; [`context::Context`] turns the global flags
//! into configured models (roles, cache, ledger).

mod cmd_eval;
mod context;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "demorecon", version, about = "Fine-grained instruction variants (DeMoRecon): build data, train, serve, evaluate.")]
struct Cli {
    #[command(flatten)]
    global: context::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score a model on a benchmark (IFEval, ...).
    #[command(subcommand)]
    Eval(cmd_eval::EvalCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    context::init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let ctx = context::Context::new(cli.global)?;
        match cli.command {
            Command::Eval(cmd) => cmd_eval::run(cmd, &ctx).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
