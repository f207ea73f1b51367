//! `demorecon export` end to end on real run folders made by `demorecon run` against the
//! scripted loopback model: every trainer's folder from a finished run, an unfinished run
//! refused with its pending units (and exported with `--partial`), bad input as errors that
//! name the file. Then `scripts/check-export.sh` — the trainers' own loaders — on the export,
//! when its Python environments are already built or `DEMORECON_EXPORT_CHECK=1` asks for it.

use std::path::{Path, PathBuf};

use demorecon_testkit::{Fault, FaultServer};
use serde_json::{Value, json};

use super::pipeline::scripted_reply;
use super::{bin, ok};

async fn scripted() -> FaultServer {
    FaultServer::start_with(Vec::new(), |body, _| Fault::Reply(scripted_reply(body))).await
}

/// Six seeds with three or four requirements each (all vary validly under the script).
fn seeds(dir: &Path) -> PathBuf {
    let topics = [
        "a harbour",
        "a library",
        "a bakery",
        "a garden",
        "a museum",
        "a market",
    ];
    let text: String = topics
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let extra = if i % 2 == 0 { ". Mention the colour blue" } else { "" };
            let row = json!({
                "id": format!("x-{i}"),
                "instruction": format!("Write a note about {t}. Keep it short. Sign it Ana{extra}."),
            });
            format!("{row}\n")
        })
        .collect();
    let path = dir.join("seeds.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn export(run: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    bin()
        .arg("export")
        .arg(run)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rows(path: &Path) -> usize {
    jsonl(path).len()
}

/// A finished run of the six seeds, one held out for FGIV-Eval.
async fn finished_run(tmp: &Path) -> PathBuf {
    let server = scripted().await;
    let run = tmp.join("run");
    ok(
        super::pipeline::run_cmd(&server, &tmp.join("cache.sqlite"), &["run"])
            .arg(seeds(tmp))
            .arg("-o")
            .arg(&run)
            .args(["--eval-seeds", "1"])
            .output()
            .unwrap(),
    );
    run
}

/// Runs `scripts/check-export.sh` on `dir` when its environments exist (or are asked for).
fn trainers_check(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join("target/venv-export");
    let asked = std::env::var("DEMORECON_EXPORT_CHECK").is_ok_and(|v| v == "1");
    let built = ["trl", "llamafactory", "axolotl"]
        .iter()
        .all(|v| venv.join(v).join(".stamp").exists());
    if !asked && !built {
        println!(
            "skipped: the trainers' own loaders (scripts/check-export.sh): no Python environments under \
             target/venv-export; set DEMORECON_EXPORT_CHECK=1 to build them (about 7 minutes, 8 GB)"
        );
        return;
    }
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/check-export.sh"))
        .arg("--export")
        .arg(dir)
        .output()
        .unwrap();
    let (text, log) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!("{text}\n{log}");
    assert!(
        out.status.success(),
        "check-export.sh failed:\n{text}\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn export_all_writes_each_trainers_folder_from_a_real_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = finished_run(tmp.path()).await;
    let out = tmp.path().join("export");
    ok(export(&run, &out, &["--to", "all", "--sft-weight", "0.5"]));

    let pairs_a = rows(&run.join("datasets/dpo_fgiv_a.jsonl"));
    let pairs_r = rows(&run.join("datasets/dpo_fgiv_r.jsonl"));
    assert!(
        pairs_a > 0 && pairs_r > 0,
        "the scripted run verifies every pair"
    );
    for trainer in ["trl", "llama-factory", "axolotl", "openrlhf"] {
        let dir = out.join(trainer);
        assert_eq!(rows(&dir.join("dpo_fgiv_a.jsonl")), pairs_a, "{trainer}");
        assert_eq!(
            rows(&dir.join("dpo_mixed.jsonl")),
            pairs_a + pairs_r,
            "{trainer}"
        );
        assert!(dir.join("dpo_mixed.parquet").exists(), "{trainer}");
        assert!(dir.join("fgiv_eval.parquet").exists(), "{trainer}");
        let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(
            card.starts_with("---\nlicense: other\n"),
            "{trainer}: {card}"
        );
        assert!(card.contains("| seeds_in | 6 |"), "{trainer}: {card}");
    }
    // The trainers' own shapes.
    let trl = &jsonl(&out.join("trl/dpo_fgiv_r.jsonl"))[0];
    assert_eq!(trl["prompt"][0]["role"], "user");
    assert_eq!(trl["chosen"].as_array().map(Vec::len), Some(1));
    let seed_response = trl["rejected"][0]["content"].as_str().unwrap();
    let kto = jsonl(&out.join("trl/kto_mixed.jsonl"));
    assert_eq!(kto.len(), 2 * (pairs_a + pairs_r));
    assert_eq!(kto[1]["label"], false);
    let lf = &jsonl(&out.join("llama-factory/dpo_fgiv_r.jsonl"))[0];
    assert_eq!(lf["rejected"]["content"], seed_response);
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("llama-factory/dataset_info.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(info["demorecon_dpo_mixed"]["ranking"], true);
    let axolotl = std::fs::read_to_string(out.join("axolotl/dpo_sft.yaml")).unwrap();
    assert!(
        axolotl.contains("dpo_loss_weights: [1.0, 0.5]"),
        "{axolotl}"
    );
    // The FGIV-Eval seed stays out of every training file.
    let eval_seed = jsonl(&out.join("trl/fgiv_eval.jsonl"))[0]["seed_id"].clone();
    assert!(kto.iter().all(|r| r["seed_id"] != eval_seed));

    trainers_check(&out);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unfinished_run_is_refused_with_its_pending_units_unless_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let server = scripted().await;
    let run = tmp.path().join("run");
    // Through stage 4 only, keeping the unverified pairs: every pair still waits for `verify`.
    ok(
        super::pipeline::run_cmd(&server, &tmp.path().join("cache.sqlite"), &["respond"])
            .arg(&run)
            .arg("--seeds")
            .arg(seeds(tmp.path()))
            .args(["--keep-unverified", "--eval-seeds", "1"])
            .output()
            .unwrap(),
    );
    let out = tmp.path().join("export");
    let refused = export(&run, &out, &["--to", "trl"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("is not finished"), "{err}");
    assert!(err.contains("verify x-0/v0"), "{err}");
    assert!(err.contains("--partial"), "{err}");
    assert!(!out.exists(), "nothing written");

    let partial = ok(export(&run, &out, &["--to", "trl", "--partial"]));
    assert!(String::from_utf8_lossy(&partial.stderr).contains("unfinished"));
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("**Partial export.**"), "{card}");
    assert!(rows(&out.join("dpo_mixed.jsonl")) > 0);
}

#[test]
fn bad_input_is_an_error_that_names_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("export");
    let not_a_run = export(tmp.path(), &out, &["--to", "trl"]);
    assert!(!not_a_run.status.success());
    let err = String::from_utf8_lossy(&not_a_run.stderr);
    assert!(
        err.contains("manifest.json") && !err.contains("panicked"),
        "{err}"
    );

    let unknown = export(tmp.path(), &out, &["--to", "deepspeed"]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("unknown trainer `deepspeed`"), "{err}");

    std::fs::write(tmp.path().join("manifest.json"), r#"{"counts": {}}"#).unwrap();
    std::fs::create_dir_all(tmp.path().join("datasets")).unwrap();
    let dpo = tmp.path().join("datasets/dpo_fgiv_a.jsonl");
    for (text, at) in [
        ("{\"prompt\": 1}\n[oops\n", "dpo_fgiv_a.jsonl:2:"),
        ("{\"prompt\": 1}\n", "dpo_fgiv_a.jsonl:1:"),
    ] {
        std::fs::write(&dpo, text).unwrap();
        let bad = export(tmp.path(), &out, &["--to", "trl"]);
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains(at) && !err.contains("panicked"), "{err}");
    }
}
