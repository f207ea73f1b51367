//! `demorecon export`: parsing and reporting only; the work is `demorecon_export::export`,
//! which reads the run folder's published files and writes one folder per trainer.

use std::path::PathBuf;

use clap::Args;
use demorecon_export::{ExportOptions, TrainOptions, Trainer};

#[derive(Args, Debug)]
#[command(
    after_help = "Writes each trainer's own SFT, DPO and KTO rows (FGIV-A, FGIV-R and both mixed), Parquet twins, \
a ready SFT+DPO config and a dataset card (README.md). With one trainer the files go into DIR; with several \
(`all`, or a comma list), into DIR/{trl,llama-factory,axolotl,openrlhf}. --sft-weight means what it means \
for `demorecon train`: DPO + w × the mean per-token NLL of the chosen responses; each config spells it in its \
trainer's own words."
)]
pub struct ExportArgs {
    /// A finished run folder (`demorecon run -o RUN`).
    pub run: PathBuf,
    /// trl, llama-factory, axolotl, openrlhf, all, or a comma-separated list.
    #[arg(long, value_name = "TRAINER")]
    pub to: String,
    /// Output folder.
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    /// Export what is final from an unfinished run (the card says so) instead of refusing.
    #[arg(long)]
    pub partial: bool,
    /// Weight of the SFT term next to DPO, as `demorecon train --sft-weight`.
    #[arg(long, default_value_t = 1.0, value_name = "W")]
    pub sft_weight: f64,
    /// DPO β.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// The model the configs train: a Hugging Face id or a local folder.
    #[arg(
        long,
        default_value = "HuggingFaceTB/SmolLM2-135M-Instruct",
        value_name = "MODEL"
    )]
    pub model: String,
    /// LLaMA-Factory's chat-template name for --model.
    #[arg(long, default_value = "smollm2", value_name = "NAME")]
    pub template: String,
    /// The seed instructions' licence for the card (e.g. cc-by-4.0); default: the run's, else `other`.
    #[arg(long, value_name = "ID")]
    pub license: Option<String>,
    /// Print what was written as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn check_weight(name: &str, w: f64) -> anyhow::Result<()> {
    if !(w.is_finite() && w >= 0.0) {
        anyhow::bail!("--{name} must be a finite number ≥ 0, not {w}");
    }
    Ok(())
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    check_weight("sft-weight", args.sft_weight)?;
    check_weight("beta", args.beta)?;
    let trainers = Trainer::parse_list(&args.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let opts = ExportOptions {
        trainers,
        partial: args.partial,
        train: TrainOptions {
            sft_weight: args.sft_weight,
            beta: args.beta,
            model: args.model,
            template: args.template,
        },
        license: args.license,
    };
    let report = demorecon_export::export(&args.run, &args.out, &opts)?;
    if report.partial {
        eprintln!(
            "warning: {} is unfinished; exported what is final ({} units pending, listed in export.json and the card)",
            args.run.display(),
            report.pending_units
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for folder in &report.folders {
        let rows: Vec<String> = folder
            .rows
            .iter()
            .filter(|(stem, _)| stem.ends_with("_mixed"))
            .map(|(stem, n)| format!("{stem} {n}"))
            .collect();
        eprintln!(
            "  {:<14} {}  ({}; configs: {})",
            folder.trainer,
            folder.dir.display(),
            rows.join(", "),
            folder.configs.join(", ")
        );
    }
    Ok(())
}
