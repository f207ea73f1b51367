//! `demorecon cache`: look at the call cache.

use crate::context::Context;

#[derive(clap::Subcommand, Debug)]
pub enum CacheCommand {
    /// Where the cache is, how many answers it holds, and its size.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: CacheCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        CacheCommand::Stats { json } => {
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
        }
    }
    Ok(())
}
