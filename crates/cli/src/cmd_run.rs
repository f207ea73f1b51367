//! `demorecon run` and the one-stage commands over a run folder (`filter`, `decompose`,
//! `vary`, `respond`, `verify`, `build`), plus `merge` for shards.
//!
//! Every command here does the same four things: open (or create) the run folder's state,
//! make sure the seeds, options, prompts and models match what the folder was started with
//! (a resumed run must be the same run), let the pipeline do what is missing, then rebuild
//! the files and the manifest from the state and print the closing table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use demorecon_data::{FieldMap, RunState, SeedFormat, read_seeds};
use demorecon_io::write_atomic;
use demorecon_pipeline::build::{self, BuildOptions, BuildReport};
use demorecon_pipeline::manifest::closing_table;
use demorecon_pipeline::runner::{self, Shard};
use demorecon_pipeline::{Models, Options, PromptSet, Stage};
use serde_json::{Value, json};

use crate::context::{Context, RoleName};

/// How to read a seed file.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Seeds")]
pub struct SeedArgs {
    /// Seed file layout: auto, jsonl, alpaca, sharegpt (WizardLM Evol-Instruct).
    #[arg(long, default_value = "auto", value_name = "FORMAT")]
    pub format: SeedFormat,
    /// Field names for other layouts, NAME=KEY with NAME one of instruction, input, response,
    /// id (repeatable), e.g. --field instruction=prompt.
    #[arg(long = "field", value_name = "NAME=KEY")]
    pub fields: Vec<String>,
    /// Set unreadable seed records aside in quarantine.jsonl instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_seeds: bool,
}

/// Options of the stages.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Stages")]
pub struct StageArgs {
    /// Folder with {stage}.toml files that replace the built-in prompts.
    #[arg(long, value_name = "DIR")]
    pub prompts: Option<PathBuf>,
    /// Generate seed responses even where the seed file has one.
    #[arg(long)]
    pub regenerate_seed_responses: bool,
    /// Flag variants whose word-level edit ratio to the seed is above this.
    #[arg(long, default_value_t = 0.5, value_name = "RATIO")]
    pub max_edit_ratio: f64,
    /// New-token cap of each response (seed, FGIV-A, FGIV-R).
    #[arg(long, default_value_t = 384, value_name = "N")]
    pub response_max_tokens: u32,
    /// Sampling temperature of responses (seeded per record).
    #[arg(long, default_value_t = 0.7, value_name = "T")]
    pub response_temperature: f32,
    /// Seeds in flight at once (the backends' own limits pace the calls).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub jobs: usize,
    /// Do only the seeds whose id hashes to I of N (combine shards with `demorecon merge`).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Make quarantined units again (e.g. after an endpoint outage).
    #[arg(long)]
    pub retry_quarantined: bool,
}

/// Options of the datasets.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Datasets")]
pub struct BuildArgs {
    /// FGIV-Eval seeds to hold out (default: min(170, a tenth of the decomposed seeds)).
    #[arg(long, value_name = "N")]
    pub eval_seeds: Option<usize>,
    /// Seed of the held-out choice.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub split_seed: u64,
    /// Include pairs that verification did not pass.
    #[arg(long)]
    pub keep_unverified: bool,
    /// Print the manifest's counts as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Seed file: JSONL, Alpaca JSON or ShareGPT/WizardLM JSON.
    pub seeds: PathBuf,
    /// Run folder (created; an existing one is resumed).
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub read: SeedArgs,
    #[command(flatten)]
    pub stage: StageArgs,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Args, Debug)]
pub struct StageCommandArgs {
    /// Run folder.
    pub run: PathBuf,
    /// Seed file, for a run folder that has none yet.
    #[arg(long, value_name = "FILE")]
    pub seeds: Option<PathBuf>,
    #[command(flatten)]
    pub read: SeedArgs,
    #[command(flatten)]
    pub stage: StageArgs,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Args, Debug)]
pub struct BuildCommandArgs {
    /// Run folder.
    pub run: PathBuf,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Shard run folders (made with the same command and `--shard I/N`).
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// The merged run folder.
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// State keys that say what a run folder is.
mod meta {
    pub const SEEDS_PATH: &str = "seeds_path";
    pub const SEEDS_DIGEST: &str = "seeds_blake3";
    pub const BAD_SEEDS: &str = "bad_seeds";
    pub const IDENTITY: &str = "identity";
    pub const SHARD: &str = "shard";
}

pub async fn run(args: RunArgs, ctx: &Context) -> anyhow::Result<()> {
    let state = RunState::open(&args.out)?;
    ingest(&state, &args.seeds, &args.read)?;
    execute(
        &args.out,
        &state,
        &args.stage,
        &args.build,
        Stage::Verify,
        ctx,
    )
    .await
}

pub async fn stage(args: StageCommandArgs, through: Stage, ctx: &Context) -> anyhow::Result<()> {
    let state = match &args.seeds {
        Some(seeds) => {
            let state = RunState::open(&args.run)?;
            ingest(&state, seeds, &args.read)?;
            state
        }
        None => RunState::open_existing(&args.run).map_err(|e| {
            anyhow::anyhow!("{e}; or pass --seeds FILE to start it with this stage")
        })?,
    };
    execute(&args.run, &state, &args.stage, &args.build, through, ctx).await
}

pub fn build_only(args: BuildCommandArgs, ctx: &Context) -> anyhow::Result<()> {
    let state = RunState::open_existing(&args.run)?;
    let shard = stored_shard(&state)?;
    let report = publish(&args.run, &state, &args.build, shard, ctx, None)?;
    report_out(&report, &args.build, ctx);
    Ok(())
}

pub fn merge(args: MergeArgs, ctx: &Context) -> anyhow::Result<()> {
    if args.out.join(demorecon_data::state::STATE_FILE).exists() {
        bail!(
            "{} already holds a run; merge into a new folder",
            args.out.display()
        );
    }
    let shards = args
        .runs
        .iter()
        .map(|dir| RunState::open_existing(dir).map(|s| (dir, s)))
        .collect::<Result<Vec<_>, _>>()?;
    let (first_dir, first) = &shards[0];
    let key = |s: &RunState, k: &str| s.meta(k).map(Option::unwrap_or_default);
    for (dir, s) in &shards[1..] {
        for k in [meta::SEEDS_DIGEST, meta::IDENTITY] {
            if key(s, k)? != key(first, k)? {
                bail!(
                    "{} and {} were not made by the same command (their {k} differs)",
                    first_dir.display(),
                    dir.display()
                );
            }
        }
    }
    let merged = RunState::open(&args.out)?;
    merged.ingest(&first.seeds()?)?;
    for k in [
        meta::SEEDS_PATH,
        meta::SEEDS_DIGEST,
        meta::BAD_SEEDS,
        meta::IDENTITY,
    ] {
        if let Some(v) = first.meta(k)? {
            merged.set_meta(k, &v)?;
        }
    }
    for (_, s) in &shards {
        merged.absorb(s)?;
    }
    let report = publish(&args.out, &merged, &args.build, None, ctx, None)?;
    eprintln!(
        "merged {} run folders into {}",
        shards.len(),
        args.out.display()
    );
    report_out(&report, &args.build, ctx);
    Ok(())
}

/// Reads the seed file into a new run folder, or checks it is the file the folder was
/// started from.
fn ingest(state: &RunState, path: &Path, read: &SeedArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let digest = blake3::hash(&bytes).to_hex().to_string();
    if let Some(stored) = state.meta(meta::SEEDS_DIGEST)? {
        if stored != digest {
            bail!(
                "{} was started from another seed file ({}); its seeds cannot change — use a new run folder",
                state.path().parent().unwrap_or(Path::new(".")).display(),
                state.meta(meta::SEEDS_PATH)?.unwrap_or_default()
            );
        }
        return Ok(());
    }
    let mut fields = FieldMap::default();
    for f in &read.fields {
        fields.set(f).map_err(anyhow::Error::msg)?;
    }
    let set = read_seeds(path, read.format, &fields, read.skip_bad_seeds)?;
    let bad: Vec<Value> = set
        .bad
        .iter()
        .map(|b| {
            json!({
                "unit": format!("{}:{}", path.display(), b.line),
                "seed_id": Value::Null,
                "stage": "read",
                "kind": "bad_seed",
                "reason": b.reason,
                "raw": b.raw,
                "calls": [],
            })
        })
        .collect();
    if !set.bad.is_empty() {
        eprintln!(
            "{}: {} unreadable record(s) set aside in quarantine.jsonl (first: line {}: {})",
            path.display(),
            set.bad.len(),
            set.bad[0].line,
            set.bad[0].reason
        );
    }
    state.ingest(&set.seeds)?;
    state.set_meta(meta::BAD_SEEDS, &serde_json::to_string(&bad)?)?;
    state.set_meta(meta::SEEDS_PATH, &path.display().to_string())?;
    // The digest last: a folder with a digest has its seeds.
    state.set_meta(meta::SEEDS_DIGEST, &digest)?;
    Ok(())
}

fn stored_shard(state: &RunState) -> anyhow::Result<Option<Shard>> {
    Ok(match state.meta(meta::SHARD)? {
        Some(s) if !s.is_empty() => Some(s.parse().map_err(anyhow::Error::msg)?),
        _ => None,
    })
}

async fn execute(
    dir: &Path,
    state: &RunState,
    args: &StageArgs,
    build_args: &BuildArgs,
    through: Stage,
    ctx: &Context,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let prompts = match &args.prompts {
        Some(dir) => PromptSet::with_overrides(dir)?,
        None => PromptSet::builtin(),
    };
    let models = Models {
        generator: ctx.model_for(RoleName::Generator, None)?,
        responder: ctx.model_for(RoleName::Responder, None)?,
        judge: ctx.model_for(RoleName::Judge, None)?,
    };
    let opts = Options {
        through,
        regenerate_seed_responses: args.regenerate_seed_responses,
        max_edit_ratio: args.max_edit_ratio,
        response_max_tokens: args.response_max_tokens,
        response_temperature: args.response_temperature,
        jobs: args.jobs,
        shard: args.shard,
        progress: true,
    };
    // What makes the data: it must not change under a resumed run.
    let identity = json!({
        "options": opts,
        "prompts": prompts.versions_of(&demorecon_judge::prompts::PIPELINE_FILES),
        "models": {
            "generator": models.generator.identity(),
            "responder": models.responder.identity(),
            "judge": models.judge.identity(),
        },
    });
    let identity_text = serde_json::to_string(&identity)?;
    match state.meta(meta::IDENTITY)? {
        Some(stored) if stored != identity_text => {
            let stored: Value = serde_json::from_str(&stored).unwrap_or(Value::Null);
            bail!(
                "{} was made with other settings: {}. Rerun with the same flags, prompts and models, or use a new run folder",
                dir.display(),
                differences(&stored, &identity).join("; ")
            );
        }
        Some(_) => {}
        None => state.set_meta(meta::IDENTITY, &identity_text)?,
    }
    let shard_text = args.shard.map(|s| format!("{}/{}", s.index, s.count));
    match (state.meta(meta::SHARD)?, &shard_text) {
        (None, Some(s)) => state.set_meta(meta::SHARD, s)?,
        (None, None) => state.set_meta(meta::SHARD, "")?,
        (Some(stored), _) if stored != shard_text.clone().unwrap_or_default() => bail!(
            "{} is shard {:?}; rerun it with the same --shard",
            dir.display(),
            stored
        ),
        _ => {}
    }
    if args.retry_quarantined {
        let again = quarantined_units(state)?;
        let n = state.remove(&again)?;
        eprintln!("retrying {n} quarantined unit(s)");
    }

    let result = runner::execute(state, &models, &prompts, &opts).await;
    // Publish whatever is done, also when the run stopped early: nothing done is lost.
    let report = publish(dir, state, build_args, args.shard, ctx, Some(started))?;
    report_out(&report, build_args, ctx);
    result.map_err(|e| {
        anyhow::anyhow!("{e} (finished work is kept; rerun the same command to continue)")
    })
}

/// Paths where two JSON values differ, for the "other settings" error.
fn differences(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let (va, vb) = (
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                    );
                    walk(
                        &format!("{path}{}{k}", if path.is_empty() { "" } else { "." }),
                        va,
                        vb,
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{path} was {a}, now {b}")),
            _ => {}
        }
    }
    walk("", old, new, &mut out);
    out
}

fn quarantined_units(state: &RunState) -> anyhow::Result<Vec<(String, String)>> {
    Ok(state
        .all_results()?
        .into_iter()
        .filter(|(_, _, v)| v["status"] == "quarantined")
        .map(|(u, s, _)| (u, s))
        .collect())
}

fn publish(
    dir: &Path,
    state: &RunState,
    args: &BuildArgs,
    shard: Option<Shard>,
    ctx: &Context,
    started: Option<Instant>,
) -> anyhow::Result<BuildReport> {
    let bad: Vec<Value> = match state.meta(meta::BAD_SEEDS)? {
        Some(text) => serde_json::from_str(&text)?,
        None => Vec::new(),
    };
    let opts = BuildOptions {
        keep_unverified: args.keep_unverified,
        eval_seeds: args.eval_seeds,
        split_seed: args.split_seed,
        shard,
    };
    let report = build::publish(dir, state, &opts, &bad)?;
    report
        .counts
        .add_up()
        .map_err(|e| anyhow::anyhow!("internal error: the run's counts do not add up: {e}"))?;
    let mut usage = BTreeMap::new();
    let mut total_cost = 0.0;
    for (stage, models) in &report.usage {
        let mut per_model = serde_json::Map::new();
        for (model, u) in models {
            let cost = ctx
                .prices()
                .price(model)
                .map_or(0.0, |p| p.cost(u.prompt_tokens, u.completion_tokens));
            total_cost += cost;
            per_model.insert(
                model.clone(),
                json!({
                    "calls": u.calls,
                    "prompt_tokens": u.prompt_tokens,
                    "completion_tokens": u.completion_tokens,
                    "cost_usd": cost,
                }),
            );
        }
        usage.insert(stage.clone(), Value::Object(per_model));
    }
    let counts = ctx.cache_counts();
    let identity: Value = state
        .meta(meta::IDENTITY)?
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let manifest = json!({
        "tool": {"name": "demorecon", "version": env!("CARGO_PKG_VERSION")},
        "command": std::env::args().collect::<Vec<_>>(),
        "input": {
            "seeds": state.meta(meta::SEEDS_PATH)?,
            "seeds_blake3": state.meta(meta::SEEDS_DIGEST)?,
        },
        "shard": shard.map(|s| format!("{}/{}", s.index, s.count)),
        "options": identity.get("options"),
        "build": opts,
        "prompts": identity.get("prompts"),
        "models": identity.get("models"),
        "counts": report.counts,
        "usage_by_stage": usage,
        "cost_usd": total_cost,
        "files": report.files,
        "this_invocation": {
            "cache_hits": counts.hits,
            "cache_misses": counts.misses,
            "seconds": started.map(|s| s.elapsed().as_secs_f64()),
        },
    });
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    write_atomic(&dir.join("manifest.json"), text.as_bytes())
        .with_context(|| format!("writing {}", dir.join("manifest.json").display()))?;
    Ok(report)
}

fn report_out(report: &BuildReport, args: &BuildArgs, ctx: &Context) {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.counts).expect("counts serialise")
        );
    } else {
        let c = ctx.cache_counts();
        eprint!("{}", closing_table(report, Some((c.hits, c.misses))));
    }
}
