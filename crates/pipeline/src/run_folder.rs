//! A run folder's lifecycle, in one place: start it from a seed file (ingest), make sure every
//! later command is the same run (seeds, options, prompts, models and shard are its identity
//! and are refused if they change), let the runner do what is missing, publish the files and
//! `manifest.json` from the state, and merge the folders of a sharded run into one.
//!
//! The state store itself (`state.sqlite`) is `demorecon_data::state`; the stages are the
//! runner's; which files exist is `build`'s. Nothing here parses flags or prints: commands
//! pass plain values in and say what came back.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use demorecon_data::state::STATE_FILE;
use demorecon_data::{FieldMap, RunState, SeedError, SeedFormat, StateError, read_seeds};
use demorecon_io::write_atomic;
use demorecon_judge::PromptSet;
use serde_json::{Value, json};

use crate::ask::PipelineError;
use crate::build::{self, BuildOptions, BuildReport};
use crate::graph::{Role, Stage, prompt_files};
use crate::manifest::{self, Invocation, RunFacts};
use crate::runner::{self, Models, Options};
use crate::shard::Shard;

/// State keys that say what a run folder is.
mod meta {
    pub const SEEDS_PATH: &str = "seeds_path";
    pub const SEEDS_DIGEST: &str = "seeds_blake3";
    pub const BAD_SEEDS: &str = "bad_seeds";
    pub const IDENTITY: &str = "identity";
    pub const SHARD: &str = "shard";
    /// The stage the last command finished through; empty while a command runs (or after it
    /// stopped early).
    pub const FINISHED: &str = "finished_through";
}

/// The manifest's file name in a run folder.
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Seeds(#[from] SeedError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The folder (or folders) cannot be used as asked; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn refused(message: String) -> FolderError {
    FolderError::Refused(message)
}

/// How to read a seed file.
#[derive(Debug, Clone, Default)]
pub struct SeedSource {
    pub format: SeedFormat,
    /// `NAME=KEY` field maps.
    pub fields: Vec<String>,
    /// Set unreadable records aside in quarantine instead of stopping at the first.
    pub skip_bad: bool,
}

/// What the models, prompts and options of a run are: a resumed run must have the same.
pub fn identity(opts: &Options, prompts: &PromptSet, models: &Models) -> Value {
    let roles: serde_json::Map<String, Value> = Role::ALL
        .iter()
        .map(|r| {
            let id = serde_json::to_value(models.get(*r).identity()).expect("identities serialise");
            (r.name().to_owned(), id)
        })
        .collect();
    json!({
        "options": opts,
        "prompts": prompts.versions_of(&prompt_files()),
        "models": roles,
    })
}

/// An open run folder.
#[derive(Debug)]
pub struct RunFolder {
    dir: PathBuf,
    state: RunState,
}

impl RunFolder {
    /// Opens run folder `dir`, creating it if needed.
    pub fn open(dir: &Path) -> Result<Self, FolderError> {
        Ok(Self {
            dir: dir.to_owned(),
            state: RunState::open(dir)?,
        })
    }

    /// Opens an existing run folder; an error naming it if there is none.
    pub fn open_existing(dir: &Path) -> Result<Self, FolderError> {
        Ok(Self {
            dir: dir.to_owned(),
            state: RunState::open_existing(dir)?,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state(&self) -> &RunState {
        &self.state
    }

    fn meta(&self, key: &str) -> Result<Option<String>, FolderError> {
        Ok(self.state.meta(key)?)
    }

    /// Reads the seed file into a new folder, or checks it is the file the folder was started
    /// from. Returns a note about unreadable records set aside, if there were any.
    pub fn ingest(&self, path: &Path, source: &SeedSource) -> Result<Option<String>, FolderError> {
        let bytes = std::fs::read(path).map_err(|source| FolderError::Io {
            path: path.to_owned(),
            source,
        })?;
        let digest = blake3::hash(&bytes).to_hex().to_string();
        if let Some(stored) = self.meta(meta::SEEDS_DIGEST)? {
            if stored != digest {
                return Err(refused(format!(
                    "{} was started from another seed file ({}); its seeds cannot change — use a new run folder",
                    self.dir.display(),
                    self.meta(meta::SEEDS_PATH)?.unwrap_or_default()
                )));
            }
            return Ok(None);
        }
        let mut fields = FieldMap::default();
        for f in &source.fields {
            fields.set(f).map_err(refused)?;
        }
        let set = read_seeds(path, source.format, &fields, source.skip_bad)?;
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
        let note = set.bad.first().map(|first| {
            format!(
                "{}: {} unreadable record(s) set aside in quarantine.jsonl (first: line {}: {})",
                path.display(),
                set.bad.len(),
                first.line,
                first.reason
            )
        });
        self.state.ingest(&set.seeds)?;
        let bad = serde_json::to_string(&bad).expect("rows serialise");
        self.state.set_meta(meta::BAD_SEEDS, &bad)?;
        self.state
            .set_meta(meta::SEEDS_PATH, &path.display().to_string())?;
        // The digest last: a folder with a digest has its seeds.
        self.state.set_meta(meta::SEEDS_DIGEST, &digest)?;
        Ok(note)
    }

    /// Records what this run is (`identity`, see [`identity`]) and its shard in a new folder,
    /// or refuses a command that would make a different run in an existing one.
    pub fn claim(&self, identity: &Value, shard: Option<Shard>) -> Result<(), FolderError> {
        let text = serde_json::to_string(identity).expect("identities serialise");
        let stored = self.meta(meta::IDENTITY)?;
        if let Some(stored) = stored.as_deref().filter(|s| *s != text) {
            let stored: Value = serde_json::from_str(stored).unwrap_or(Value::Null);
            return Err(refused(format!(
                "{} was made with other settings: {}. Rerun with the same flags, prompts and models, or use a new run folder",
                self.dir.display(),
                differences(&stored, identity).join("; ")
            )));
        }
        let shard_text = shard.map(|s| s.to_string()).unwrap_or_default();
        let stored_shard = self.meta(meta::SHARD)?;
        if let Some(stored) = stored_shard.as_ref().filter(|s| **s != shard_text) {
            return Err(refused(format!(
                "{} is shard {stored:?}; rerun it with the same --shard (or --shard auto as the same array task)",
                self.dir.display()
            )));
        }
        if stored.is_none() {
            self.state.set_meta(meta::IDENTITY, &text)?;
        }
        if stored_shard.is_none() {
            self.state.set_meta(meta::SHARD, &shard_text)?;
        }
        Ok(())
    }

    /// The shard this folder holds, if it is one.
    pub fn shard(&self) -> Result<Option<Shard>, FolderError> {
        match self.meta(meta::SHARD)? {
            Some(s) if !s.is_empty() => s.parse().map(Some).map_err(|e| {
                refused(format!(
                    "{}: stored shard unreadable: {e}",
                    self.dir.display()
                ))
            }),
            _ => Ok(None),
        }
    }

    /// The stage the last command finished through; `None` if it has not finished.
    pub fn finished_through(&self) -> Result<Option<Stage>, FolderError> {
        Ok(self
            .meta(meta::FINISHED)?
            .and_then(|s| Stage::from_command(&s)))
    }

    /// Forgets every quarantined result so the next command makes it again. Returns how many.
    pub fn retry_quarantined(&self) -> Result<usize, FolderError> {
        let again: Vec<(String, String)> = self
            .state
            .all_results()?
            .into_iter()
            .filter(|(_, _, v)| v["status"] == "quarantined")
            .map(|(u, s, _)| (u, s))
            .collect();
        // What was finished is no longer.
        self.state.set_meta(meta::FINISHED, "")?;
        Ok(self.state.remove(&again)?)
    }

    /// Runs the pipeline over the folder's seeds (its shard's) through `opts.through`, and
    /// records how far it finished — not at all while units wait on a batch file. Everything
    /// done before an error stays in the state.
    pub async fn execute(
        &self,
        models: &Models,
        prompts: &PromptSet,
        opts: &Options,
    ) -> Result<runner::Summary, PipelineError> {
        let before = self.finished_through().map_err(other)?;
        self.state.set_meta(meta::FINISHED, "")?;
        let summary = runner::execute(&self.state, models, prompts, opts).await?;
        if summary.deferred_units == 0 {
            let through = before.map_or(opts.through, |b| b.max(opts.through));
            self.state.set_meta(meta::FINISHED, through.name())?;
        }
        Ok(summary)
    }

    /// Writes every file of the folder and its manifest from the state (the folder's shard
    /// only), and checks that the counts add up.
    pub fn publish(
        &self,
        build: &BuildOptions,
        invocation: &Invocation,
    ) -> Result<BuildReport, FolderError> {
        let bad: Vec<Value> = match self.meta(meta::BAD_SEEDS)? {
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                refused(format!(
                    "{}: stored bad seeds unreadable: {e}",
                    self.dir.display()
                ))
            })?,
            None => Vec::new(),
        };
        let shard = self.shard()?;
        let identity: Value = self
            .meta(meta::IDENTITY)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let opts = BuildOptions {
            shard,
            variant_kinds: serde_json::from_value(identity["options"]["variant_kinds"].clone())
                .unwrap_or_default(),
            ..build.clone()
        };
        let report = build::publish(&self.dir, &self.state, &opts, &bad)?;
        report.counts.add_up().map_err(|e| {
            refused(format!(
                "internal error: the run's counts do not add up: {e}"
            ))
        })?;
        let facts = RunFacts {
            seeds_path: self.meta(meta::SEEDS_PATH)?,
            seeds_digest: self.meta(meta::SEEDS_DIGEST)?,
            shard: shard.map(|s| s.to_string()),
            identity,
        };
        let document = manifest::document(&report, &opts, &facts, invocation);
        let mut text = serde_json::to_string_pretty(&document).expect("manifests serialise");
        text.push('\n');
        let path = self.dir.join(MANIFEST_FILE);
        write_atomic(&path, text.as_bytes()).map_err(|source| FolderError::Io { path, source })?;
        Ok(report)
    }
}

fn other(e: FolderError) -> PipelineError {
    match e {
        FolderError::State(e) => PipelineError::State(e),
        FolderError::Pipeline(e) => e,
        e => PipelineError::Other(e.to_string()),
    }
}

/// Paths where two JSON values differ, for the "other settings" error.
fn differences(old: &Value, new: &Value) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let (va, vb) = (
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                    );
                    let sep = if path.is_empty() { "" } else { "." };
                    walk(&format!("{path}{sep}{k}"), va, vb, out);
                }
            }
            _ if a != b => out.push(format!("{path} was {a}, now {b}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

/// The shard folders that `merge` was given: paths as they are, and glob patterns (such as
/// `runs/shard-*`, when the shell left them unexpanded) expanded to the folders they match.
/// A folder named twice counts once.
pub fn shard_folders(args: &[PathBuf]) -> Result<Vec<PathBuf>, FolderError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for arg in args {
        for dir in expand(arg)? {
            let key = dir.canonicalize().unwrap_or_else(|_| dir.clone());
            if seen.insert(key) {
                out.push(dir);
            }
        }
    }
    Ok(out)
}

fn expand(arg: &Path) -> Result<Vec<PathBuf>, FolderError> {
    let text = arg.to_string_lossy();
    if arg.exists() || !text.contains(['*', '?', '[']) {
        return Ok(vec![arg.to_owned()]);
    }
    let matches =
        glob::glob(&text).map_err(|e| refused(format!("{text}: not a usable pattern: {e}")))?;
    let dirs: Vec<PathBuf> = matches
        .filter_map(Result::ok)
        .filter(|p| p.is_dir())
        .collect();
    if dirs.is_empty() {
        return Err(refused(format!("{text} matches no folder")));
    }
    Ok(dirs)
}

/// What a shard folder says about itself, for checking a set of them.
struct ShardFacts {
    dir: PathBuf,
    shard: Shard,
    seeds_digest: String,
    identity: String,
    finished: Option<Stage>,
}

impl ShardFacts {
    fn read(folder: &RunFolder) -> Result<Self, FolderError> {
        let shard = folder.shard()?.ok_or_else(|| {
            refused(format!(
                "{} was not made with --shard; merge takes the folders of one sharded run",
                folder.dir.display()
            ))
        })?;
        Ok(Self {
            dir: folder.dir.clone(),
            shard,
            seeds_digest: folder.meta(meta::SEEDS_DIGEST)?.unwrap_or_default(),
            identity: folder.meta(meta::IDENTITY)?.unwrap_or_default(),
            finished: folder.finished_through()?,
        })
    }

    fn named(&self) -> String {
        format!("shard {} ({})", self.shard, self.dir.display())
    }
}

/// Checks that `shards` are one run's shards, complete and disjoint: every index `0..N` once,
/// the same `N`, seeds and identity, each finished through the same stage, which is returned.
fn check_shards(shards: &[ShardFacts]) -> Result<Stage, FolderError> {
    let first = shards
        .first()
        .ok_or_else(|| refused("merge needs at least one shard folder".into()))?;
    let count = first.shard.count;
    if let Some(odd) = shards.iter().find(|s| s.shard.count != count) {
        return Err(refused(format!(
            "{} and {} come from runs split differently ({} vs {} shards)",
            first.named(),
            odd.named(),
            count,
            odd.shard.count
        )));
    }
    let mut by_index: BTreeMap<u32, &ShardFacts> = BTreeMap::new();
    for s in shards {
        if let Some(earlier) = by_index.insert(s.shard.index, s) {
            return Err(refused(format!(
                "shard {} is given twice: {} and {}; merge one folder per shard",
                s.shard,
                earlier.dir.display(),
                s.dir.display()
            )));
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(refused(format!(
            "shard {} missing: {} of {count} shard folder(s) given; merge needs every shard",
            missing.join(", "),
            shards.len()
        )));
    }
    for s in &shards[1..] {
        for (what, a, b) in [
            ("seed file", &first.seeds_digest, &s.seeds_digest),
            ("options, prompts or models", &first.identity, &s.identity),
        ] {
            if a != b {
                return Err(refused(format!(
                    "{} and {} were not made by the same command (their {what} differ)",
                    first.named(),
                    s.named()
                )));
            }
        }
    }
    finished_stage(shards)
}

fn finished_stage(shards: &[ShardFacts]) -> Result<Stage, FolderError> {
    let not_finished = |s: &ShardFacts| {
        refused(format!(
            "{} has not finished (its last command stopped early or is still running); rerun that command before merging",
            s.named()
        ))
    };
    let first = &shards[0];
    let stage = first.finished.ok_or_else(|| not_finished(first))?;
    for s in &shards[1..] {
        let done = s.finished.ok_or_else(|| not_finished(s))?;
        if done != stage {
            return Err(refused(format!(
                "{} finished through {} but {} through {}; take every shard as far before merging",
                s.named(),
                done.name(),
                first.named(),
                stage.name()
            )));
        }
    }
    Ok(stage)
}

/// Merges the folders of a sharded run into a new run folder `out` (files are not published
/// yet: call [`RunFolder::publish`]). Refuses unless the shards are complete and disjoint.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<RunFolder, FolderError> {
    if out.join(STATE_FILE).exists() {
        return Err(refused(format!(
            "{} already holds a run; merge into a new folder",
            out.display()
        )));
    }
    let shards = dirs
        .iter()
        .map(|dir| RunFolder::open_existing(dir))
        .collect::<Result<Vec<_>, _>>()?;
    let facts = shards
        .iter()
        .map(ShardFacts::read)
        .collect::<Result<Vec<_>, _>>()?;
    let stage = check_shards(&facts)?;
    let merged = RunFolder::open(out)?;
    let first = &shards[0].state;
    merged.state.ingest(&first.seeds()?)?;
    for k in [
        meta::SEEDS_PATH,
        meta::SEEDS_DIGEST,
        meta::BAD_SEEDS,
        meta::IDENTITY,
    ] {
        if let Some(v) = first.meta(k)? {
            merged.state.set_meta(k, &v)?;
        }
    }
    for s in &shards {
        merged.state.absorb(&s.state)?;
    }
    merged.state.set_meta(meta::FINISHED, stage.name())?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(dir: &str, shard: &str) -> ShardFacts {
        ShardFacts {
            dir: dir.into(),
            shard: shard.parse().unwrap(),
            seeds_digest: "d".into(),
            identity: "i".into(),
            finished: Some(Stage::Verify),
        }
    }

    fn refusal(shards: &[ShardFacts]) -> String {
        check_shards(shards).unwrap_err().to_string()
    }

    #[test]
    fn shards_must_be_complete_disjoint_and_alike() {
        let ok = [facts("a", "0/2"), facts("b", "1/2")];
        assert_eq!(check_shards(&ok).unwrap(), Stage::Verify);
        let missing = refusal(&[facts("a", "0/3"), facts("c", "2/3")]);
        assert!(missing.contains("shard 1/3 missing"), "{missing}");
        let twice = refusal(&[facts("a", "0/2"), facts("b", "1/2"), facts("c", "1/2")]);
        assert!(
            twice.contains("shard 1/2 is given twice: b and c"),
            "{twice}"
        );
        let split = refusal(&[facts("a", "0/2"), facts("b", "1/3")]);
        assert!(split.contains("2 vs 3 shards"), "{split}");
        let mut other = facts("b", "1/2");
        other.identity = "j".into();
        let differ = refusal(&[facts("a", "0/2"), other]);
        assert!(differ.contains("options, prompts or models"), "{differ}");
        let mut unfinished = facts("b", "1/2");
        unfinished.finished = None;
        let stopped = refusal(&[facts("a", "0/2"), unfinished]);
        assert!(
            stopped.contains("shard 1/2 (b) has not finished"),
            "{stopped}"
        );
        let mut shorter = facts("b", "1/2");
        shorter.finished = Some(Stage::Vary);
        let uneven = refusal(&[facts("a", "0/2"), shorter]);
        assert!(uneven.contains("finished through vary"), "{uneven}");
    }

    #[test]
    fn differences_name_the_changed_paths() {
        let old = json!({"options": {"a": 1, "b": 2}, "models": {"judge": "x"}});
        let new = json!({"options": {"a": 1, "b": 3}, "models": {"judge": "y"}});
        assert_eq!(
            differences(&old, &new),
            [
                "options.b was 2, now 3",
                "models.judge was \"x\", now \"y\""
            ]
        );
    }

    #[test]
    fn globs_expand_to_folders_and_paths_pass_through() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["shard-0", "shard-1", "other"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        std::fs::write(tmp.path().join("shard-2.sqlite"), b"").unwrap();
        let pattern = tmp.path().join("shard-*");
        let found = shard_folders(&[pattern.clone(), tmp.path().join("shard-1")]).unwrap();
        assert_eq!(
            found,
            [tmp.path().join("shard-0"), tmp.path().join("shard-1")],
            "files are not folders, and a folder named twice counts once"
        );
        let none = shard_folders(&[tmp.path().join("nothing-*")]).unwrap_err();
        assert!(none.to_string().contains("matches no folder"), "{none}");
        let plain = tmp.path().join("absent");
        assert_eq!(
            shard_folders(std::slice::from_ref(&plain)).unwrap(),
            [plain]
        );
    }
}
