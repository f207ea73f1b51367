//! `demorecon eval …`: score a model or given responses on a benchmark.
//!
//! `eval ifeval` finds the prompt file (`--input`, else the copy under the data home, else a
//! one-time checked download), optionally lints it, generates responses with the model under
//! test when `--model` is given (else reads `--responses`), scores strict and loose with
//! `demorecon_eval::ifeval`, writes the reference's output files into `--out`, and prints a
//! table (or the summary as JSON with `--json`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use demorecon_eval::ifeval::{self, ScoreOptions, Summary, generate::GenerateOptions};

use crate::context::{Context, RoleName};

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// IFEval: 541 prompts with verifiable instructions, scored strict and loose exactly as
    /// Google's reference implementation does.
    Ifeval(IfevalArgs),
}

#[derive(Args, Debug)]
pub struct IfevalArgs {
    /// Responses to score: JSONL with {"prompt","response"} (or {"key","response"}) per line.
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    pub responses: Option<PathBuf>,
    /// The IFEval prompt file. Default: $DEMORECON_HOME/data/ifeval/input_data.jsonl, downloaded
    /// once from the Hugging Face Hub (google/IFEval) when missing and online.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Folder for eval_results_strict.jsonl, eval_results_loose.jsonl and summary.json.
    #[arg(short, long, value_name = "DIR", default_value = "ifeval-results")]
    pub out: PathBuf,
    /// Remove a leading <think>…</think> block from each response before scoring.
    #[arg(long)]
    pub strip_think: bool,
    /// Report contradictions in the prompt data (kwargs vs prompt text, duplicate ids). Scores
    /// are not affected; without --responses/--model only the lint runs.
    #[arg(long)]
    pub lint: bool,
    /// Print the summary as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Generate the responses first with this backend as the model under test (a spec:
    /// `embedded`, `embedded:FILE.gguf` or `MODEL@BASE_URL`), greedy, then score them.
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
    /// New-token cap per generated response.
    #[arg(long, default_value_t = 1280, requires = "model")]
    pub max_tokens: u32,
    /// Generation requests in flight at once.
    #[arg(long, default_value_t = 4, requires = "model")]
    pub concurrency: usize,
}

pub async fn run(cmd: EvalCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Ifeval(args) => run_ifeval(args, ctx).await,
    }
}

async fn resolve_input(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    let dest = ifeval::fetch::default_input_path(&demorecon_llm::home::data_home());
    Ok(ifeval::fetch::ensure_input_data(&dest).await?)
}

async fn run_ifeval(args: IfevalArgs, ctx: &Context) -> anyhow::Result<()> {
    if args.responses.is_none() && args.model.is_none() && !args.lint {
        anyhow::bail!(
            "nothing to score: pass --responses FILE (or --model MODEL to generate them, or --lint)"
        );
    }
    let input_path = resolve_input(args.input.as_deref()).await?;
    let inputs = ifeval::read_inputs(&input_path)?;

    if args.lint {
        let issues = ifeval::lint::lint(&inputs);
        if args.json && args.responses.is_none() && args.model.is_none() {
            println!("{}", serde_json::to_string_pretty(&issues)?);
            return Ok(());
        }
        eprintln!(
            "lint: {} finding(s) in {} (scores are not affected)",
            issues.len(),
            input_path.display()
        );
        for i in &issues {
            eprintln!(
                "  key {:>5}  {:<45} {:<22} {}",
                i.key, i.instruction_id, i.kind, i.message
            );
        }
        if args.responses.is_none() && args.model.is_none() {
            return Ok(());
        }
    }

    let responses = if let Some(path) = &args.responses {
        let rows = ifeval::read_responses(path)?;
        ifeval::join_responses(&inputs, &rows)?
    } else {
        let model = ctx
            .model_for(RoleName::Target, args.model.as_deref())
            .context("model under test")?;
        let opts = GenerateOptions {
            max_tokens: args.max_tokens,
            concurrency: args.concurrency,
        };
        let total = inputs.len();
        let rows = ifeval::generate::generate_responses(model, &inputs, opts, |done| {
            if done % 20 == 0 || done == total {
                eprintln!("generated {done}/{total}");
            }
        })
        .await?;
        write_responses(&args.out, &rows)?;
        rows.into_iter().map(|r| r.response).collect()
    };

    let ev = ifeval::evaluate(
        &inputs,
        &responses,
        ScoreOptions {
            strip_think: args.strip_think,
        },
    )?;
    let written = ifeval::write_outputs(&args.out, &ev)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&ev.summary)?);
    } else {
        print!("{}", table(&ev.summary));
        for p in written {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn write_responses(dir: &Path, rows: &[ifeval::ResponseRow]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    let path = dir.join("responses.jsonl");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The four headline metrics as a small terminal table.
fn table(s: &Summary) -> String {
    let row = |name: &str, st: f64, sc: (u64, u64), lo: f64, lc: (u64, u64)| {
        format!(
            "{name:<20} {st:>8.4} {:>11} {lo:>8.4} {:>11}\n",
            format!("{}/{}", sc.0, sc.1),
            format!("{}/{}", lc.0, lc.1)
        )
    };
    let mut out = format!(
        "{:<20} {:>8} {:>11} {:>8} {:>11}\n",
        "IFEval", "strict", "", "loose", ""
    );
    out.push_str(&row(
        "prompt-level",
        s.prompt_level_strict_acc,
        (s.strict.prompt_level_correct, s.strict.prompt_total),
        s.prompt_level_loose_acc,
        (s.loose.prompt_level_correct, s.loose.prompt_total),
    ));
    out.push_str(&row(
        "instruction-level",
        s.inst_level_strict_acc,
        (
            s.strict.instruction_level_correct,
            s.strict.instruction_total,
        ),
        s.inst_level_loose_acc,
        (s.loose.instruction_level_correct, s.loose.instruction_total),
    ));
    out
}
