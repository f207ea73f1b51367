//! `scripts/reproduce.sh --preset tiny` end to end on the binary under test: the pipeline's run
//! folder, six trainings (or their recorded skips), every model's eval folders, the report and
//! the timings; then a rerun with `--offline` succeeds (every call is a cache hit), trains
//! nothing again and reproduces every eval folder and dataset byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use serde_json::Value;

use super::{bin, ok, shared_data};

const TRAININGS: [&str; 6] = ["sft-a", "dpo-a", "sft+dpo-a", "sft-r", "dpo-r", "sft+dpo-r"];
const BENCHMARKS: [&str; 4] = ["ifeval", "fgiv", "infobench", "followbench"];

/// `bash scripts/reproduce.sh --preset tiny` into `out` with the binary under test, in the
/// environment `bin()` gives it, and none of the script's own knobs from ours.
fn reproduce(out: &Path, extra: &[&str]) -> Output {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = shared_data();
    let binary = bin();
    let mut cmd = Command::new("bash");
    for (key, value) in binary.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd.env_remove("VARIANT_KINDS")
        .env_remove("DEMORECON_FLAGS")
        .env_remove("DEMORECON_BIN")
        .arg(root.join("scripts/reproduce.sh"))
        .args(["--preset", "tiny", "--bin"])
        .arg(binary.get_program())
        .arg("--seeds")
        .arg(root.join("examples/seeds.jsonl"))
        .arg("--out")
        .arg(out)
        .arg("--ifeval")
        .arg(data.join("ifeval/input_data.jsonl"))
        .arg("--infobench")
        .arg(data.join("infobench/infobench.jsonl"))
        .arg("--followbench")
        .arg(data.join("followbench"))
        .args(extra);
    cmd.output().unwrap()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir` (recursively) with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.insert(path, bytes);
            }
        }
    }
    files
}

#[test]
fn reproduce_tiny_runs_every_stage_and_an_offline_rerun_trains_nothing_again() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let first = ok(reproduce(&out, &[]));
    let stdout = String::from_utf8_lossy(&first.stdout);

    // 1. The pipeline's run folder.
    let run = out.join("run");
    assert!(run.join("manifest.json").is_file(), "{stdout}");
    for file in [
        "sft_fgiv_a.jsonl",
        "sft_fgiv_r.jsonl",
        "dpo_fgiv_a.jsonl",
        "dpo_fgiv_r.jsonl",
    ] {
        assert!(
            run.join("datasets").join(file).is_file(),
            "no datasets/{file}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(out.join("seeds.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3,
        "the tiny preset takes the first 3 seeds"
    );

    // 2. Each training: a merged model, or a skip with its reason.
    let skipped = std::fs::read_to_string(out.join("skipped.txt")).unwrap();
    let skipped_for = |what: &str| skipped.lines().any(|l| l.split('\t').next() == Some(what));
    let mut models = vec!["base".to_string()];
    for name in TRAININGS {
        let dir = out.join("train").join(name);
        if dir.join("model.gguf").is_file() {
            assert!(dir.join("reproduce.done").is_file(), "{name}: no stamp");
            assert!(dir.join("metrics.jsonl").is_file(), "{name}: no metrics");
            models.push(name.to_string());
        } else {
            assert!(
                skipped_for(&format!("train/{name}")),
                "train/{name}: neither model.gguf nor a recorded skip\n{skipped}\n{stdout}"
            );
        }
    }
    assert!(
        models.len() > 1,
        "every training was skipped:\n{skipped}\n{stdout}"
    );

    // 3. Every model on every benchmark (FGIV-Eval only when the run held out variants),
    // each eval folder naming the model it evaluated.
    let fgiv_skipped = skipped_for("eval/fgiv");
    let mut eval_dirs = Vec::new();
    for bench in BENCHMARKS {
        if bench == "fgiv" && fgiv_skipped {
            continue;
        }
        for model in &models {
            let dir = out.join("eval").join(bench).join(model);
            let summary = read_json(&dir.join("summary.json"));
            assert_eq!(summary["benchmark"], bench, "{}", dir.display());
            let spec = summary["model"]["spec"].as_str().unwrap();
            if model == "base" {
                assert_eq!(spec, "embedded");
            } else {
                assert!(
                    spec.ends_with(&format!("train/{model}/model.gguf")),
                    "{bench}/{model} evaluated {spec}"
                );
            }
            assert!(dir.join("items.jsonl").is_file());
            eval_dirs.push(dir);
        }
    }

    // 4. The report names every model: the base by its model id, each trained one by its
    // folder (their GGUFs share one name).
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    // One table per benchmark (IFEval, InFoBench, FollowBench at least).
    assert!(markdown.matches("#### ").count() >= 3, "{markdown}");
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(!report.is_empty());
    let base = read_json(&out.join("eval/ifeval/base/summary.json"));
    let base_name = base["model"]["model"].as_str().unwrap();
    assert!(report.contains(base_name), "the report lacks {base_name}");
    for model in &models[1..] {
        assert!(report.contains(model.as_str()), "the report lacks {model}");
    }

    let timings = std::fs::read_to_string(out.join("timings.tsv")).unwrap();
    for stage in ["pipeline", "train", "eval", "report", "total"] {
        assert!(
            timings
                .lines()
                .any(|l| l.starts_with(&format!("{stage}\t"))),
            "no {stage} in timings.tsv:\n{timings}"
        );
    }
    assert!(out.join("machine.txt").is_file());

    // The rerun: offline (a cache miss would fail it), no training again, the same bytes.
    let mtimes = || -> Vec<SystemTime> {
        models[1..]
            .iter()
            .map(|m| {
                let dir = out.join("train").join(m);
                std::fs::metadata(dir.join("model.gguf"))
                    .unwrap()
                    .modified()
                    .unwrap()
            })
            .collect()
    };
    let trained_at = mtimes();
    let evals_before: Vec<_> = eval_dirs.iter().map(|d| tree(d)).collect();
    let datasets_before = tree(&run.join("datasets"));

    let again = ok(reproduce(&out, &["--offline"]));
    let stdout = String::from_utf8_lossy(&again.stdout);
    for model in &models[1..] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&format!("train/{model} ")) && l.contains("done earlier")),
            "train/{model} not skipped on the rerun:\n{stdout}"
        );
    }
    assert_eq!(trained_at, mtimes(), "a model was trained again");
    let evals_after: Vec<_> = eval_dirs.iter().map(|d| tree(d)).collect();
    assert!(
        evals_before == evals_after,
        "the offline rerun changed an eval folder"
    );
    assert!(
        datasets_before == tree(&run.join("datasets")),
        "the rerun changed the run's datasets"
    );
    assert!(
        !std::fs::read_to_string(out.join("report.html"))
            .unwrap()
            .is_empty()
    );
}
