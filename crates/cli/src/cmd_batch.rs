//! `demorecon batch import`: read the results of batch files that `run --batch` wrote
//! (OpenAI Batch output and error files, vLLM `run_batch` output) into the call cache, so
//! that rerunning the run continues from them. The reading is `demorecon_llm::batch`'s.

use std::path::PathBuf;

use demorecon_llm::batch::{self, LineIssue};

use crate::context::Context;

#[derive(clap::Subcommand, Debug)]
pub enum BatchCommand {
    /// Store the answers of batch result files in the call cache. Failed lines are listed
    /// and stay pending: the next `run --batch` writes them again.
    Import {
        /// Result files: OpenAI's output and error files, or vLLM run_batch output, in any
        /// order.
        #[arg(required = true, num_args = 1..)]
        results: Vec<PathBuf>,
        /// Print what was imported as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Lines of each kind listed before "and N more".
const SHOWN: usize = 10;

pub fn run(cmd: BatchCommand, ctx: &Context) -> anyhow::Result<()> {
    let BatchCommand::Import { results, json } = cmd;
    let Some(cache) = ctx.cache()? else {
        anyhow::bail!("--no-cache given: batch answers are imported into the call cache");
    };
    let report = batch::import(&cache, &results)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    eprintln!(
        "{}: {} answer(s) imported from {} line(s) of {} file(s), {} already cached, {} failed, {} unknown, {} malformed",
        cache.path().display(),
        report.imported,
        report.lines,
        report.files,
        report.already_cached,
        report.failed.len(),
        report.unknown.len(),
        report.malformed.len()
    );
    list("failed (asked again next round)", &report.failed);
    list("unknown id (not written by this cache)", &report.unknown);
    list("malformed", &report.malformed);
    if !report.malformed.is_empty() && report.imported + report.already_cached == 0 {
        anyhow::bail!("no line of the given files is batch output");
    }
    Ok(())
}

fn list(what: &str, issues: &[LineIssue]) {
    for issue in issues.iter().take(SHOWN) {
        eprintln!("  {what}: {issue}");
    }
    if issues.len() > SHOWN {
        eprintln!("  … and {} more {what}", issues.len() - SHOWN);
    }
}
