//! `demorecon eval …`: score a model, or given responses, on a benchmark.
//!
//! Every benchmark runs on the eval crate's one shape (`demorecon_eval::bench::run`): the
//! command loads the items, builds the model under test (`--model`, else the `target` role)
//! and the judge (the `judge` role) through the [`Context`] — so the cache, ledger and budget
//! apply — runs, writes the eval folder (`summary.json`, `items.jsonl`, plus a benchmark's
//! reference files) and prints the headline table, or the summary as JSON with `--json`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use demorecon_eval::bench::{self, Benchmark as _, Judge, Responses, RunOptions};
use demorecon_eval::record::{ItemRecord, Summary, write_eval_dir};
use demorecon_eval::{fgiv, followbench, ifeval, infobench};
use demorecon_judge::PromptSet;

use crate::context::{Context, RoleName};

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// IFEval: 541 prompts with verifiable instructions, scored strict and loose exactly as
    /// Google's reference implementation does.
    Ifeval(IfevalArgs),
    /// FGIV-Eval: the held-out variants of a pipeline run. The model under test answers each
    /// variant (a judge says whether it addresses every instruction) and says whether given
    /// responses follow given variants (detection).
    Fgiv(FgivArgs),
    /// InFoBench: 500 instructions with 2,250 decomposed yes/no questions, asked one at a time
    /// in one judge conversation per instruction; DRFR overall, Easy/Hard and per label.
    Infobench(InfobenchArgs),
    /// FollowBench: 820 items in six categories, each level adding one constraint; rule checks
    /// where the reference has them, the judge with the constraint-evolution path elsewhere;
    /// HSR/SSR per category and level, CSL per category.
    Followbench(FollowbenchArgs),
}

/// Options every eval shares.
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Folder for summary.json, items.jsonl and the benchmark's own files.
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the summary as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Calls in flight at once (generation, or items being judged).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The model under test and the prompts of the judge-based evals.
#[derive(Args, Debug)]
pub struct GenerationArgs {
    /// Generate the responses with this model under test (a spec: `embedded`,
    /// `embedded:FILE.gguf` or `MODEL@BASE_URL`). Default: the target role.
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
    /// New-token cap per generated response.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: u32,
    /// Prompt files that replace the built-in ones (fgiv.toml, verify.toml, infobench.toml,
    /// followbench.toml).
    #[arg(long, value_name = "DIR")]
    pub prompts: Option<PathBuf>,
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
    /// Remove a leading <think>…</think> block from each response before scoring.
    #[arg(long)]
    pub strip_think: bool,
    /// Report contradictions in the prompt data (kwargs vs prompt text, duplicate ids). Scores
    /// are not affected; without --responses/--model only the lint runs.
    #[arg(long)]
    pub lint: bool,
    /// Generate the responses first with this backend as the model under test (a spec:
    /// `embedded`, `embedded:FILE.gguf` or `MODEL@BASE_URL`), greedy, then score them.
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
    /// Score only the first N prompts (a fixed slice, e.g. for a quick check).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// New-token cap per generated response.
    #[arg(long, default_value_t = 1280)]
    pub max_tokens: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct FgivArgs {
    /// A pipeline run folder (its datasets/fgiv_eval.jsonl and fgiv_detection.jsonl are read).
    #[arg(
        value_name = "RUN",
        required_unless_present = "data",
        conflicts_with = "data"
    )]
    pub run: Option<PathBuf>,
    /// A folder holding fgiv_eval.jsonl (and fgiv_detection.jsonl) in the shape `build` writes.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Skip the per-sub-instruction verdicts (the paper's pass rate and detection only).
    #[arg(long)]
    pub no_sub_instructions: bool,
    /// Score only the first N items of each kind (a fixed slice).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub generation: GenerationArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct InfobenchArgs {
    /// The InFoBench file (infobench.jsonl: id, instruction, input, decomposed_questions,
    /// question_label, subset).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Judge existing outputs: JSONL rows with `id` and `output` (or `response`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["judgements", "model"])]
    pub responses: Option<PathBuf>,
    /// Aggregate existing judge verdicts (the InFoBench repo's evaluation output: rows with
    /// `id` and `eval`, a list of true/false/null); no model is called.
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    pub judgements: Option<PathBuf>,
    /// Score only the first N instructions (a fixed slice; not with --judgements).
    #[arg(long, value_name = "N", conflicts_with = "judgements")]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub generation: GenerationArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct FollowbenchArgs {
    /// The folder with FollowBench's six files ({content,situation,style,format,example,mixed}_constraints.jsonl).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Score existing responses: a folder in FollowBench's output layout
    /// ({type}_constraint.jsonl with the instruction and the response per row).
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    pub responses: Option<PathBuf>,
    /// Only these categories, comma-separated (default: all six).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub categories: Vec<String>,
    /// Only the first N example groups of each category (all their levels: a fixed slice).
    #[arg(long, value_name = "N")]
    pub examples: Option<usize>,
    /// Score the rule-checked items only; the others are listed as not scored (no judge).
    #[arg(long)]
    pub rules_only: bool,
    /// Re-ask the judge once with a stricter instruction when its reply does not parse.
    #[arg(long)]
    pub reask_strict: bool,
    /// New-token cap of a judge reply (the reference's is 1024).
    #[arg(long, default_value_t = 1024)]
    pub judge_max_tokens: u32,
    #[command(flatten)]
    pub generation: GenerationArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn run(cmd: EvalCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Ifeval(args) => run_ifeval(args, ctx).await,
        EvalCommand::Fgiv(args) => run_fgiv(args, ctx).await,
        EvalCommand::Infobench(args) => run_infobench(args, ctx).await,
        EvalCommand::Followbench(args) => run_followbench(args, ctx).await,
    }
}

fn run_options(common: &CommonArgs, max_tokens: u32) -> RunOptions {
    RunOptions {
        max_tokens,
        concurrency: common.concurrency,
        progress: !common.quiet && !common.json,
    }
}

/// The model under test as a responses source.
fn generate_with(ctx: &Context, model: Option<&str>) -> anyhow::Result<Responses> {
    Ok(Responses::Generate {
        model: ctx
            .model_for(RoleName::Target, model)
            .context("model under test")?,
        spec: Some(ctx.spec_label(RoleName::Target, model)?),
    })
}

/// The judge role, with the prompt version its questions are asked under.
fn judge(ctx: &Context, prompt_version: &str) -> anyhow::Result<Judge> {
    Ok(Judge::new(
        ctx.model_for(RoleName::Judge, None).context("judge")?,
        Some(ctx.spec_label(RoleName::Judge, None)?),
        prompt_version,
    ))
}

fn prompt_set(dir: Option<&Path>) -> anyhow::Result<PromptSet> {
    Ok(match dir {
        Some(dir) => PromptSet::with_overrides(dir)?,
        None => PromptSet::builtin(),
    })
}

/// Writes the eval folder and prints the table (or the JSON summary).
fn finish(
    out: &Path,
    summary: &Summary,
    items: &[ItemRecord],
    json: bool,
    mut written: Vec<PathBuf>,
) -> anyhow::Result<()> {
    written.extend(write_eval_dir(out, summary, items)?);
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
        return Ok(());
    }
    print!("{}", headline_table(summary));
    if summary.unparsed > 0 {
        println!(
            "{} judge repl{} could not be parsed (counted as not passing; see items.jsonl)",
            summary.unparsed,
            if summary.unparsed == 1 { "y" } else { "ies" }
        );
    }
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// The headline metrics, ×100, with their counts.
fn headline_table(s: &Summary) -> String {
    let width = s
        .headline
        .iter()
        .map(|h| h.label.chars().count())
        .max()
        .unwrap_or(10)
        .max(10);
    let mut out = format!("{:<width$} {:>7}  {:>13}\n", s.benchmark, "score", "n");
    for h in &s.headline {
        let value = h
            .value
            .map_or_else(|| "—".to_owned(), |v| format!("{:.2}", v * 100.0));
        let counts = match (h.num, h.den) {
            (Some(n), Some(d)) => format!("{}/{}", trim_float(n), trim_float(d)),
            _ if !h.mean_of.is_empty() => format!("mean of {}", h.mean_of.len()),
            _ => String::new(),
        };
        out.push_str(&format!("{:<width$} {value:>7}  {counts:>13}\n", h.label));
    }
    out
}

fn trim_float(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
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
    let mut inputs = ifeval::read_inputs(&input_path)?;
    let json = args.common.json;

    if args.lint {
        let issues = ifeval::lint::lint(&inputs);
        if json && args.responses.is_none() && args.model.is_none() {
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
    if let Some(n) = args.limit {
        inputs.truncate(n);
    }
    let out = args
        .common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("ifeval-results"));
    let responses = match &args.responses {
        Some(path) => {
            let rows = ifeval::read_responses(path)?;
            Responses::Given {
                source: path.clone(),
                texts: ifeval::join_responses(&inputs, &rows)?,
            }
        }
        None => generate_with(ctx, args.model.as_deref())?,
    };
    let generated = matches!(responses, Responses::Generate { .. });
    let bench = ifeval::bench::Ifeval::new(
        inputs,
        ifeval::ScoreOptions {
            strip_think: args.strip_think,
        },
    );
    let (summary, items) = bench::run(
        &bench,
        responses,
        None,
        run_options(&args.common, args.max_tokens),
    )
    .await?;
    let mut written = Vec::new();
    if generated {
        let rows: Vec<ifeval::ResponseRow> = items
            .iter()
            .map(|it| ifeval::ResponseRow {
                key: it.extra.get("key").and_then(serde_json::Value::as_i64),
                prompt: Some(it.prompt.clone()),
                response: it.response.clone(),
            })
            .collect();
        let path = out.join("responses.jsonl");
        demorecon_io::write_atomic_with(&path, |w| {
            for r in &rows {
                serde_json::to_writer(&mut *w, r)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })
        .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    let ev = ifeval::bench::evaluation_from(&items);
    // summary.json comes from `finish`: the common summary keeps the reference's fields.
    written.extend(ifeval::write_row_files(&out, &ev)?);
    finish(&out, &summary, &items, json, written)
}

async fn run_fgiv(args: FgivArgs, ctx: &Context) -> anyhow::Result<()> {
    let source = args
        .run
        .as_deref()
        .or(args.data.as_deref())
        .context("pass a run folder or --data DIR")?;
    let mut items = fgiv::load(source)?;
    if let Some(n) = args.limit {
        let (mut direct, mut detect) = (0, 0);
        items.retain(|it| match it {
            fgiv::Item::Direct(_) => {
                direct += 1;
                direct <= n
            }
            fgiv::Item::Detect(_) => {
                detect += 1;
                detect <= n
            }
        });
    }
    let mut bench = fgiv::FgivEval::new(items, prompt_set(args.generation.prompts.as_deref())?)?;
    bench.per_sub_instruction = !args.no_sub_instructions;
    let judge = judge(ctx, &bench.prompt_version())?;
    let responses = generate_with(ctx, args.generation.model.as_deref())?;
    let (summary, items) = bench::run(
        &bench,
        responses,
        Some(&judge),
        run_options(&args.common, args.generation.max_tokens),
    )
    .await?;
    let out = args.common.out.clone().unwrap_or_else(|| {
        PathBuf::from(match &args.run {
            Some(run) => run.join("fgiv-eval").display().to_string(),
            None => "fgiv-results".to_owned(),
        })
    });
    finish(&out, &summary, &items, args.common.json, Vec::new())
}

async fn run_infobench(args: InfobenchArgs, ctx: &Context) -> anyhow::Result<()> {
    let mut bench =
        infobench::InfoBench::load(&args.input, prompt_set(args.generation.prompts.as_deref())?)?;
    let out = args
        .common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("infobench-results"));
    let (summary, items) = if let Some(path) = &args.judgements {
        bench.from_judgements(path)?
    } else {
        // A given file is joined to every item first (so it is checked whole), then the slice
        // is taken from both.
        let responses = match &args.responses {
            Some(path) => match bench.given_responses(path)? {
                Responses::Given { source, mut texts } => {
                    if let Some(n) = args.limit {
                        texts.truncate(n);
                    }
                    Responses::Given { source, texts }
                }
                other => other,
            },
            None => generate_with(ctx, args.generation.model.as_deref())?,
        };
        if let Some(n) = args.limit {
            bench.truncate(n);
        }
        let judge = judge(ctx, &bench.prompt_version())?;
        bench::run(
            &bench,
            responses,
            Some(&judge),
            run_options(&args.common, args.generation.max_tokens),
        )
        .await?
    };
    finish(&out, &summary, &items, args.common.json, Vec::new())
}

async fn run_followbench(args: FollowbenchArgs, ctx: &Context) -> anyhow::Result<()> {
    let types: Vec<&str> = if args.categories.is_empty() {
        followbench::CONSTRAINT_TYPES.to_vec()
    } else {
        for c in &args.categories {
            if !followbench::CONSTRAINT_TYPES.contains(&c.as_str()) {
                anyhow::bail!(
                    "unknown FollowBench category {c:?}; choose from {}",
                    followbench::CONSTRAINT_TYPES.join(", ")
                );
            }
        }
        args.categories.iter().map(String::as_str).collect()
    };
    let mut items = followbench::load_types(&args.data, &types)?;
    if let Some(n) = args.examples {
        // The first N example groups of each category, whole (every level), so CSL still means
        // what it says.
        let mut kept: Vec<(String, u64)> = Vec::new();
        items.retain(|it| {
            let key = (it.constraint_type.clone(), it.example_id);
            if kept.contains(&key) {
                return true;
            }
            let seen = kept
                .iter()
                .filter(|(t, _)| *t == it.constraint_type)
                .count();
            if seen < n {
                kept.push(key);
                true
            } else {
                false
            }
        });
    }
    let opts = followbench::Options {
        rules_only: args.rules_only,
        reask_strict: args.reask_strict,
        judge_max_tokens: args.judge_max_tokens,
    };
    let bench = followbench::FollowBench::new(
        items,
        prompt_set(args.generation.prompts.as_deref())?,
        opts,
    )?;
    let out = args
        .common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("followbench-results"));
    let responses = match &args.responses {
        Some(dir) => bench.given_responses(dir)?,
        None => generate_with(ctx, args.generation.model.as_deref())?,
    };
    let generated = matches!(responses, Responses::Generate { .. });
    let judge = if args.rules_only {
        None
    } else {
        Some(judge(ctx, &bench.prompt_version())?)
    };
    let (summary, items) = bench::run(
        &bench,
        responses,
        judge.as_ref(),
        run_options(&args.common, args.generation.max_tokens),
    )
    .await?;
    let mut written = Vec::new();
    if generated {
        let texts: Vec<String> = items.iter().map(|it| it.response.clone()).collect();
        written.extend(
            followbench::write_responses(&out.join("responses"), bench.items(), &texts)
                .with_context(|| format!("writing responses under {}", out.display()))?,
        );
    }
    finish(&out, &summary, &items, args.common.json, written)
}
