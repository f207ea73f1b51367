//! `demorecon run`, the one-stage commands over a run folder (`filter`, `decompose`, `vary`,
//! `respond`, `verify`, declared by the pipeline's graph), `build`, and `merge` for shards:
//! flags in, calls to `demorecon_pipeline::run_folder`, the closing table out.
//!
//! The run folder's lifecycle — ingest, the identity checks that make a resumed run the same
//! run, execution, publishing, merging — is the pipeline crate's; this module only turns flags
//! into its values and its results into output.

use std::path::PathBuf;
use std::time::Instant;

use clap::{ArgMatches, Args, FromArgMatches, Subcommand};
use demorecon_data::SeedFormat;
use demorecon_pipeline::build::{BuildOptions, BuildReport};
use demorecon_pipeline::manifest::{Invocation, closing_table};
use demorecon_pipeline::run_folder::{self, RunFolder, SeedSource};
use demorecon_pipeline::verifiable::VariantKinds;
use demorecon_pipeline::{GRAPH, Models, Options, PromptSet, Shard, ShardSpec, Stage, shard};

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

/// `--variant-kinds`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindsArg {
    Free,
    Verifiable,
    Both,
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
    /// Which variants to make per sub-instruction: `free` (the paper's: the generator edits
    /// the seed, the judge verifies), `verifiable` (a code-checkable constraint, IFEval's
    /// instruction types, responses rejection-sampled) or `both`.
    #[arg(long, value_enum, default_value_t = KindsArg::Free, value_name = "KINDS")]
    pub variant_kinds: KindsArg,
    /// Most responses drawn per verifiable variant and kind (A, R): the first that passes its
    /// check is kept.
    #[arg(long, default_value_t = 4, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub samples: u32,
    /// Sampling temperature of those draws (each has its own seed).
    #[arg(long, default_value_t = 0.8, value_name = "T")]
    pub sample_temperature: f32,
    /// Seeds in flight at once (the backends' own limits pace the calls).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub jobs: usize,
    /// Do only the seeds whose id hashes to I of N (combine shards with `demorecon merge`).
    /// `auto`: the index from JOB_COMPLETION_INDEX (Kubernetes Indexed Job, with --shards) or
    /// SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT (Slurm array).
    #[arg(long, value_name = "I/N|auto")]
    pub shard: Option<ShardSpec>,
    /// How many shards there are, for --shard auto (a Kubernetes Job's completions).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub shards: Option<u32>,
    /// Make quarantined units again (e.g. after an endpoint outage).
    #[arg(long)]
    pub retry_quarantined: bool,
    /// Don't call the endpoints: write every call this round still needs into DIR as OpenAI
    /// Batch input files (for OpenAI's Batch API or vLLM's run_batch), then `demorecon batch
    /// import` the results and rerun the same command for the next round. Embedded roles
    /// still answer in process.
    #[arg(long, value_name = "DIR")]
    pub batch: Option<PathBuf>,
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

/// The one-stage commands, one per stage of the pipeline's graph.
#[derive(Debug)]
pub struct StageCommand {
    pub through: Stage,
    pub args: StageCommandArgs,
}

impl FromArgMatches for StageCommand {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let (name, sub) = matches
            .subcommand()
            .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::MissingSubcommand))?;
        let through = Stage::from_command(name)
            .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidSubcommand))?;
        Ok(Self {
            through,
            args: StageCommandArgs::from_arg_matches(sub)?,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Subcommand for StageCommand {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        GRAPH.stages.iter().fold(cmd, |cmd, stage| {
            let sub = StageCommandArgs::augment_args(clap::Command::new(stage.command));
            cmd.subcommand(sub.about(stage.about))
        })
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        Stage::from_command(name).is_some()
    }
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Shard run folders (made with the same command and `--shard`), or a quoted glob such as
    /// 'runs/shard-*'. Every shard 0..N-1 must be there once, finished.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// The merged run folder.
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub build: BuildArgs,
}

impl From<&SeedArgs> for SeedSource {
    fn from(a: &SeedArgs) -> Self {
        SeedSource {
            format: a.format,
            fields: a.fields.clone(),
            skip_bad: a.skip_bad_seeds,
        }
    }
}

impl From<&BuildArgs> for BuildOptions {
    fn from(a: &BuildArgs) -> Self {
        BuildOptions {
            keep_unverified: a.keep_unverified,
            eval_seeds: a.eval_seeds,
            split_seed: a.split_seed,
            // Set from the run's identity when the folder publishes.
            variant_kinds: Default::default(),
            shard: None,
        }
    }
}

pub async fn run(args: RunArgs, ctx: &Context) -> anyhow::Result<()> {
    let folder = RunFolder::open(&args.out)?;
    ingest(&folder, &args.seeds, &args.read)?;
    execute(&folder, &args.stage, &args.build, Stage::Verify, ctx).await
}

pub async fn stage(cmd: StageCommand, ctx: &Context) -> anyhow::Result<()> {
    let args = cmd.args;
    let folder = match &args.seeds {
        Some(seeds) => {
            let folder = RunFolder::open(&args.run)?;
            ingest(&folder, seeds, &args.read)?;
            folder
        }
        None => RunFolder::open_existing(&args.run).map_err(|e| {
            anyhow::anyhow!("{e}; or pass --seeds FILE to start it with this stage")
        })?,
    };
    execute(&folder, &args.stage, &args.build, cmd.through, ctx).await
}

pub fn build_only(args: BuildCommandArgs, ctx: &Context) -> anyhow::Result<()> {
    let folder = RunFolder::open_existing(&args.run)?;
    let report = folder.publish(&(&args.build).into(), &invocation(ctx, None))?;
    report_out(&report, &args.build, ctx);
    Ok(())
}

pub fn merge(args: MergeArgs, ctx: &Context) -> anyhow::Result<()> {
    let shards = run_folder::shard_folders(&args.runs)?;
    let merged = run_folder::merge(&shards, &args.out)?;
    let report = merged.publish(&(&args.build).into(), &invocation(ctx, None))?;
    eprintln!(
        "merged {} run folders into {}",
        shards.len(),
        args.out.display()
    );
    report_out(&report, &args.build, ctx);
    Ok(())
}

fn ingest(folder: &RunFolder, seeds: &std::path::Path, read: &SeedArgs) -> anyhow::Result<()> {
    if let Some(note) = folder.ingest(seeds, &read.into())? {
        eprintln!("{note}");
    }
    Ok(())
}

fn models(ctx: &Context) -> anyhow::Result<Models> {
    Ok(Models {
        generator: ctx.model_for(RoleName::Generator, None)?,
        responder: ctx.model_for(RoleName::Responder, None)?,
        judge: ctx.model_for(RoleName::Judge, None)?,
    })
}

/// `--shard`/`--shards` against this process's environment.
fn shard_of(args: &StageArgs) -> anyhow::Result<Option<Shard>> {
    shard::resolve(args.shard, args.shards, |k| std::env::var(k).ok()).map_err(anyhow::Error::msg)
}

async fn execute(
    folder: &RunFolder,
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
    let batch = match &args.batch {
        Some(_) => Some(ctx.defer_to_batch()?),
        None => None,
    };
    let models = models(ctx)?;
    let shard = shard_of(args)?;
    let opts = Options {
        through,
        regenerate_seed_responses: args.regenerate_seed_responses,
        max_edit_ratio: args.max_edit_ratio,
        response_max_tokens: args.response_max_tokens,
        response_temperature: args.response_temperature,
        variant_kinds: match args.variant_kinds {
            KindsArg::Free => VariantKinds::Free,
            KindsArg::Verifiable => VariantKinds::Verifiable,
            KindsArg::Both => VariantKinds::Both,
        },
        samples: args.samples,
        sample_temperature: args.sample_temperature,
        jobs: args.jobs,
        shard,
        progress: true,
    };
    folder.claim(&run_folder::identity(&opts, &prompts, &models), shard)?;
    if args.retry_quarantined {
        let n = folder.retry_quarantined()?;
        eprintln!("retrying {n} quarantined unit(s)");
    }
    let result = folder.execute(&models, &prompts, &opts).await;
    // Publish whatever is done, also when the run stopped early: nothing done is lost.
    let report = folder.publish(&build_args.into(), &invocation(ctx, Some(started)))?;
    report_out(&report, build_args, ctx);
    let summary = result.map_err(|e| {
        anyhow::anyhow!("{e} (finished work is kept; rerun the same command to continue)")
    })?;
    if let (Some(dir), Some(batch)) = (&args.batch, batch) {
        write_batch(dir, &batch, summary.deferred_units, ctx)?;
    }
    Ok(())
}

/// Writes this round's batch files and says what to do next.
fn write_batch(
    dir: &std::path::Path,
    batch: &demorecon_llm::batch::BatchCollector,
    deferred_units: u64,
    ctx: &Context,
) -> anyhow::Result<()> {
    let Some(cache) = ctx.cache()? else {
        anyhow::bail!("--batch needs the call cache");
    };
    let files = batch.write(dir, &cache)?;
    if files.is_empty() {
        eprintln!("batch: no call left to send; the run is complete");
        return Ok(());
    }
    eprintln!(
        "batch: {} request(s) for {deferred_units} pending unit(s), in {} file(s):",
        batch.len(),
        files.len()
    );
    for f in &files {
        eprintln!(
            "  {} ({} lines, model {})",
            f.path.display(),
            f.lines,
            f.model
        );
    }
    eprintln!(
        "batch: run them (OpenAI Batch API with endpoint /v1/chat/completions, or vLLM's \
         run_batch), then `demorecon batch import OUTPUT...` and rerun this command"
    );
    Ok(())
}

fn invocation(ctx: &Context, started: Option<Instant>) -> Invocation<'_> {
    Invocation {
        command: std::env::args().collect(),
        prices: ctx.prices(),
        cache: ctx.cache_counts(),
        started,
    }
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
