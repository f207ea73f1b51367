//! `demorecon train` through the binary on a tiny random llama GGUF: a run that is
//! interrupted and resumed ends with the same adapter as one that is not, the summary and
//! metrics are there, and `chat --model-path` answers with the merged model.

use std::path::Path;

use serde_json::Value;

use super::{bin, ok};

fn write_prefs(path: &Path) {
    let mut text = String::new();
    for topic in ["rivers", "stars", "bread", "clocks", "maps", "salt"] {
        let row = serde_json::json!({
            "prompt": [{"role": "user", "content": format!("Tell me about {topic}.")}],
            "chosen": [{"role": "assistant", "content": format!("{topic} matter. OK!")}],
            "rejected": [{"role": "assistant", "content": format!("{topic} are dull.")}],
        });
        text.push_str(&format!("{row}\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn train(home: &Path, args: &[String]) -> Value {
    let out = bin()
        .env("DEMORECON_HOME", home)
        .args(["train", "--json", "--epochs", "3", "--batch-size", "2"])
        .args(["--lr", "1e-2", "--lora-dropout", "0.1", "--save-steps", "2"])
        .args(args)
        .output()
        .unwrap();
    serde_json::from_slice(&ok(out).stdout).unwrap()
}

#[test]
fn train_resumes_exactly_and_the_merged_model_answers() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let base = dir.path().join("tiny.gguf");
    demorecon_train::tiny::write_tiny_gguf(&base, 5).unwrap();
    let prefs = dir.path().join("prefs.jsonl");
    write_prefs(&prefs);
    let common = |out: &str| {
        vec![
            "--dpo".to_string(),
            prefs.display().to_string(),
            "--base".into(),
            base.display().to_string(),
            "--out".into(),
            dir.path().join(out).display().to_string(),
        ]
    };
    let args = |out: &str, extra: &[&str]| {
        let mut v = common(out);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    let straight = train(&home, &args("a", &[]));
    assert_eq!(straight["finished"], true);
    assert_eq!(straight["total_steps"], 9);
    assert_eq!(straight["reference_computed"], 12);
    assert!(straight["last"]["loss"].as_f64() < straight["first"]["loss"].as_f64());

    let stopped = train(&home, &args("b", &["--stop-after-steps", "3"]));
    assert_eq!(stopped["finished"], false);
    assert_eq!(stopped["adapter"], Value::Null);
    let resumed = train(&home, &args("b", &["--resume"]));
    assert_eq!(resumed["resumed_from_step"], 2);
    assert_eq!(
        resumed["reference_reused"], 12,
        "the cache in DEMORECON_HOME is reused"
    );
    let adapter = |run: &str| {
        std::fs::read(
            dir.path()
                .join(run)
                .join("adapter/adapter_model.safetensors"),
        )
        .unwrap()
    };
    assert!(adapter("a") == adapter("b"), "resumed adapter differs");
    let metrics = std::fs::read_to_string(dir.path().join("b/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 9);

    let merged = dir.path().join("a/model.gguf");
    let chat = |extra: &[&str]| {
        let out = bin()
            .env("DEMORECON_HOME", &home)
            .args([
                "--no-cache",
                "chat",
                "--temperature",
                "0",
                "--max-tokens",
                "8",
            ])
            .args(extra)
            .arg("Tell me about salt.")
            .output()
            .unwrap();
        String::from_utf8(ok(out).stdout).unwrap()
    };
    let from_merged = chat(&["--model-path", merged.to_str().unwrap()]);
    // `chat --adapter` applies the PEFT adapter to the base at load: the same answer.
    let base_spec = format!("embedded:{}", base.display());
    let adapter = dir.path().join("a/adapter");
    let from_adapter = chat(&[
        "--model",
        &base_spec,
        "--adapter",
        adapter.to_str().unwrap(),
    ]);
    assert_eq!(from_adapter, from_merged);
}

#[tokio::test(flavor = "multi_thread")]
async fn train_on_a_run_folder_records_what_it_trained_on_and_refuses_an_unfinished_run() {
    use super::pipeline::{run_cmd, scripted_server, write_seeds};
    let server = scripted_server(std::time::Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let base = dir.path().join("tiny.gguf");
    demorecon_train::tiny::write_tiny_gguf(&base, 5).unwrap();
    let seeds = write_seeds(dir.path());
    let cache = dir.path().join("cache.sqlite");
    let run = dir.path().join("run");
    ok(run_cmd(&server, &cache, &["run"])
        .arg(&seeds)
        .arg("-o")
        .arg(&run)
        .output()
        .unwrap());
    let out = dir.path().join("trained");
    let summary = train(
        &home,
        &[
            run.display().to_string(),
            "--fgiv".into(),
            "a".into(),
            "--mode".into(),
            "sft+kto".into(),
            "--max-steps".into(),
            "2".into(),
            "--threads".into(),
            "1".into(),
            "--max-length".into(),
            "256".into(),
            "--no-merged".into(),
            "--base".into(),
            base.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ],
    );
    assert_eq!(summary["finished"], true);
    assert_eq!(summary["total_steps"], 2);
    let pairs = std::fs::read_to_string(run.join("datasets/dpo_fgiv_a.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(pairs > 0);
    assert_eq!(summary["kto_rows"].as_u64().unwrap(), 2 * pairs as u64);
    assert!(summary["last"]["kto_loss"].is_number(), "{summary}");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["run"], run.display().to_string());
    let files = config["dpo"].as_array().unwrap();
    assert_eq!(files.len(), 1, "--fgiv a: FGIV-A pairs only");
    assert!(
        files[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("dpo_fgiv_a.jsonl")
    );
    assert_eq!(files[0]["rows"], pairs);
    assert_eq!(files[0]["blake3"].as_str().unwrap().len(), 64);
    assert_eq!(config["train"]["mode"], "sft+kto");
    assert_eq!(config["train"]["max_steps"], 2);

    // A run stopped after the filter stage is not trained on.
    let partial = dir.path().join("partial");
    ok(run_cmd(&server, &cache, &["filter"])
        .arg(&partial)
        .arg("--seeds")
        .arg(&seeds)
        .output()
        .unwrap());
    let err = bin()
        .env("DEMORECON_HOME", &home)
        .arg("train")
        .arg(&partial)
        .arg("--base")
        .arg(&base)
        .arg("--out")
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert!(!err.status.success());
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(text.contains("is not finished"), "{text}");
    assert!(!dir.path().join("never").exists());
}
