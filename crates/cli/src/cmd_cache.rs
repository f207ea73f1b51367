//! `demorecon cache`: look at the call cache, and merge cache files (per-shard caches, since
//! SQLite on a network filesystem is unsafe to share between machines).

use std::path::PathBuf;

use demorecon_llm::cache::merge_files;

use crate::context::Context;

#[derive(clap::Subcommand, Debug)]
pub enum CacheCommand {
    /// Where the cache is, how many answers it holds, and its size.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Copy every answer of cache files into one (created if needed). Safe to repeat; a key
    /// held with two different answers is a conflict: reported, the first answer kept.
    Merge {
        /// Cache files to read (e.g. one per shard).
        #[arg(required = true, num_args = 1..)]
        inputs: Vec<PathBuf>,
        /// The merged cache file.
        #[arg(short, long, value_name = "FILE")]
        out: PathBuf,
        /// Print what was merged as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: CacheCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        CacheCommand::Stats { json } => stats(ctx, json),
        CacheCommand::Merge { inputs, out, json } => merge(&inputs, &out, json),
    }
}

fn stats(ctx: &Context, json: bool) -> anyhow::Result<()> {
    let path = ctx.cache_path();
    let Some(cache) = ctx.cache()? else {
        anyhow::bail!("--no-cache given: there is no cache to describe");
    };
    let entries = cache.len()?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if json {
        println!(
            "{}",
            serde_json::json!({"path": path, "entries": entries, "bytes": bytes})
        );
    } else {
        println!(
            "{}: {entries} cached answers, {bytes} bytes",
            path.display()
        );
    }
    Ok(())
}

fn merge(inputs: &[PathBuf], out: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let report = merge_files(out, inputs)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        eprintln!(
            "{}: {} answer(s) copied from {} file(s), {} already there",
            out.display(),
            report.copied,
            inputs.len(),
            report.already
        );
    }
    if let Some(first) = report.conflicts.first() {
        anyhow::bail!(
            "{} key(s) hold different answers in different files (first: {first}); {} kept the answer it had first",
            report.conflicts.len(),
            out.display()
        );
    }
    Ok(())
}
