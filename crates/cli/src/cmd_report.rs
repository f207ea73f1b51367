//! `demorecon report DIR... -o report.html`: one self-contained HTML page over eval, run and
//! train folders (the report crate does the work; this parses and writes).

use std::path::PathBuf;

use clap::Args;
use demorecon_report::{PairMode, ReportOptions, build_report};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Eval folders (summary.json + items.jsonl), run folders (manifest.json) and train
    /// folders (metrics.jsonl), in the order models should appear.
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,
    /// The HTML file to write.
    #[arg(short, long, value_name = "FILE", default_value = "report.html")]
    pub out: PathBuf,
    /// The page title.
    #[arg(long, default_value = "demorecon report")]
    pub title: String,
    /// Bootstrap resamples per interval and per paired test.
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,
    /// Seed of the bootstrap (the same seed gives the same page, byte for byte).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compare every model with the first one of its benchmark instead of every pair.
    #[arg(long)]
    pub baseline_first: bool,
    /// Also write the tables and paired tests as Markdown to FILE (for a README).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let opts = ReportOptions {
        title: args.title,
        resamples: args.resamples.max(1),
        seed: args.seed,
        pairs: if args.baseline_first {
            PairMode::FirstAsBaseline
        } else {
            PairMode::AllPairs
        },
    };
    let report = build_report(&args.dirs, &opts)?;
    report.write(&args.out)?;
    if let Some(path) = &args.markdown {
        demorecon_io::write_atomic(path, report.markdown().as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    for w in &report.warnings {
        eprintln!("note: {w}");
    }
    println!("wrote {}", args.out.display());
    Ok(())
}
