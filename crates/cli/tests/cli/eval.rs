//! The judge-based evals and the report end to end through the binary, on the embedded model
//! as both the model under test and the judge, over small slices: the files are written, the
//! counts add up, and a rerun with `--offline` reproduces every file byte for byte from the
//! cache (so nothing is asked twice).

use std::path::Path;

use serde_json::{Value, json};

use super::{bin, ok, shared_data, temp_cache};

/// Runs `demorecon --cache CACHE [--offline] eval ARGS… --json -o OUT --quiet` and returns the
/// summary it printed.
fn eval(cache: &Path, offline: bool, out: &Path, args: &[&str]) -> Value {
    let mut cmd = bin();
    cmd.arg("--cache").arg(cache);
    if offline {
        cmd.arg("--offline");
    }
    let run = ok(cmd
        .arg("eval")
        .args(args)
        .args(["--json", "--quiet", "-o"])
        .arg(out)
        .output()
        .unwrap());
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON summary ({e}): {}",
            String::from_utf8_lossy(&run.stdout)
        )
    })
}

fn items(dir: &Path) -> Vec<Value> {
    super::read_jsonl(&dir.join("items.jsonl"))
}

/// The first run writes the folder; an offline rerun into another folder gives the same bytes.
fn run_twice(args: &[&str]) -> (Value, tempfile::TempDir) {
    let (_cache_dir, cache) = temp_cache();
    let first = tempfile::tempdir().unwrap();
    let summary = eval(&cache, false, first.path(), args);
    let again = tempfile::tempdir().unwrap();
    let summary2 = eval(&cache, true, again.path(), args);
    assert_eq!(
        summary, summary2,
        "the offline rerun summarises differently"
    );
    for file in ["items.jsonl", "summary.json"] {
        assert_eq!(
            std::fs::read(first.path().join(file)).unwrap(),
            std::fs::read(again.path().join(file)).unwrap(),
            "{file} differs on the offline rerun"
        );
    }
    (summary, first)
}

fn headline(summary: &Value, key: &str) -> Value {
    summary["headline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {summary}"))
        .clone()
}

#[test]
fn ifeval_generates_scores_and_reruns_offline() {
    let input = shared_data().join("ifeval/input_data.jsonl");
    let input = input.to_str().unwrap();
    let (summary, dir) = run_twice(&[
        "ifeval",
        "--model",
        "embedded",
        "--input",
        input,
        "--limit",
        "3",
        "--max-tokens",
        "48",
    ]);
    assert_eq!(summary["benchmark"], "ifeval");
    assert_eq!(summary["items"], 3);
    assert_eq!(summary["model"]["spec"], "embedded");
    assert_eq!(headline(&summary, "prompt_strict")["den"], 3.0);
    let rows = items(dir.path());
    assert_eq!(rows.len(), 3);
    let insts: f64 = rows
        .iter()
        .map(|r| r["scores"]["inst_strict"][1].as_f64().unwrap())
        .sum();
    assert_eq!(headline(&summary, "inst_strict")["den"], insts);
    for f in [
        "responses.jsonl",
        "eval_results_strict.jsonl",
        "eval_results_loose.jsonl",
    ] {
        assert_eq!(super::read_jsonl(&dir.path().join(f)).len(), 3, "{f}");
    }
}

/// Two held-out variants of one seed and a balanced detection pair, as `build` writes them.
fn fgiv_data(dir: &Path) {
    let subs = |second: &str| {
        json!([
            "write a short note to a neighbour",
            second,
            "use at most 40 words"
        ])
    };
    let rows = [
        json!({"seed_id": "s1", "variant_id": "s1/v1", "prompt": "Write a short, cheerful note to a neighbour about a lost cat. Use at most 40 words.",
               "sub_instructions": subs("be cheerful"), "modified_index": 1, "original_sub_instruction": "be apologetic",
               "modified_sub_instruction": "be cheerful", "edit_kind": "contradict", "seed_prompt": "Write a short, apologetic note to a neighbour about a lost cat. Use at most 40 words."}),
        json!({"seed_id": "s1", "variant_id": "s1/v2", "prompt": "Write a short, apologetic note to a neighbour about a lost cat. Use at least 80 words.",
               "sub_instructions": ["write a short note to a neighbour", "be apologetic", "use at least 80 words"], "modified_index": 2,
               "original_sub_instruction": "use at most 40 words", "modified_sub_instruction": "use at least 80 words",
               "edit_kind": "contradict", "seed_prompt": "Write a short, apologetic note to a neighbour about a lost cat. Use at most 40 words."}),
    ];
    let det = [
        json!({"seed_id": "s1", "variant_id": "s1/v1", "prompt": rows[0]["prompt"], "response": "Good news, neighbour! Have you seen a grey cat? Ours ran off; call us!", "response_from": "s1/v1", "label": "yes"}),
        json!({"seed_id": "s1", "variant_id": "s1/v1", "prompt": rows[0]["prompt"], "response": "I am so sorry to bother you, but our cat is lost.", "response_from": "s1", "label": "no"}),
    ];
    let lines = |v: &[Value]| v.iter().map(|r| format!("{r}\n")).collect::<String>();
    std::fs::write(dir.join("fgiv_eval.jsonl"), lines(&rows)).unwrap();
    std::fs::write(dir.join("fgiv_detection.jsonl"), lines(&det)).unwrap();
}

#[test]
fn fgiv_judges_every_variant_and_sub_instruction_and_reruns_offline() {
    let data = tempfile::tempdir().unwrap();
    fgiv_data(data.path());
    let (summary, dir) = run_twice(&[
        "fgiv",
        "--data",
        data.path().to_str().unwrap(),
        "--max-tokens",
        "64",
    ]);
    assert_eq!(summary["benchmark"], "fgiv");
    assert_eq!(summary["items"], 4);
    assert_eq!(summary["judge"]["kind"], "embedded");
    assert!(
        summary["judge"]["prompt_version"]
            .as_str()
            .unwrap()
            .contains("fgiv/1+")
    );
    assert_eq!(headline(&summary, "pass_rate")["den"], 2.0);
    assert_eq!(headline(&summary, "detection_yes")["den"], 1.0);
    assert_eq!(headline(&summary, "detection_no")["den"], 1.0);
    assert_eq!(
        headline(&summary, "detection")["mean_of"],
        json!(["detection_yes", "detection_no"])
    );
    let rows = items(dir.path());
    let direct: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "direct").collect();
    assert_eq!(direct.len(), 2);
    for r in &direct {
        let subs = r["verdict"]["sub_instructions"].as_array().unwrap();
        assert_eq!(subs.len(), 3);
        assert_eq!(subs.iter().filter(|s| s["modified"] == true).count(), 1);
        // "use at most/least N words" is decided by code, never by the judge.
        let words = subs
            .iter()
            .find(|s| s["text"].as_str().unwrap().contains("words"))
            .unwrap();
        assert!(
            words["by"]
                .as_str()
                .unwrap()
                .starts_with("code:length_constraints:number_words"),
            "{words}"
        );
        assert_eq!(r["judge_raw"].as_array().unwrap().len(), 1);
    }
    let detection: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "detection").collect();
    assert_eq!(detection.len(), 2);
    for r in detection {
        // Three new tokens at most.
        assert!(
            r["response"].as_str().unwrap().split_whitespace().count() <= 3,
            "{r}"
        );
    }
}

#[test]
fn infobench_aggregates_given_judgements_like_the_reference() {
    let data = shared_data().join("infobench");
    let (_c, cache) = temp_cache();
    let out = tempfile::tempdir().unwrap();
    let summary = eval(
        &cache,
        true,
        out.path(),
        &[
            "infobench",
            "--input",
            data.join("infobench.jsonl").to_str().unwrap(),
            "--judgements",
            data.join("third_party_gpt4_outputs_with_gpt4_eval.jsonl")
                .to_str()
                .unwrap(),
        ],
    );
    // The reference aggregation's counts (scripts/infobench/drfr.py over the same file).
    let drfr = headline(&summary, "drfr");
    assert_eq!(
        (drfr["num"].clone(), drfr["den"].clone()),
        (json!(1971.0), json!(2250.0))
    );
    assert_eq!(summary["items"], 500);
    assert!(summary.get("judge").is_none(), "no judge was asked");
    assert_eq!(items(out.path()).len(), 500);
}

#[test]
fn infobench_judges_generated_outputs_turn_by_turn_and_reruns_offline() {
    let input = shared_data().join("infobench/infobench.jsonl");
    let (summary, dir) = run_twice(&[
        "infobench",
        "--input",
        input.to_str().unwrap(),
        "--limit",
        "2",
        "--max-tokens",
        "64",
    ]);
    assert_eq!(summary["items"], 2);
    let rows = items(dir.path());
    let asked: usize = rows
        .iter()
        .map(|r| r["judge_raw"].as_array().unwrap().len())
        .sum();
    let den = headline(&summary, "drfr")["den"].as_f64().unwrap();
    // Every recorded reply (parsed or not) is in the denominator; unasked questions are not.
    assert_eq!(asked as f64, den, "{summary}");
    assert!(asked >= 2);
}

#[test]
fn followbench_rules_only_scores_the_mistral_responses_like_the_reference() {
    let data = shared_data().join("followbench");
    let (_c, cache) = temp_cache();
    let out = tempfile::tempdir().unwrap();
    let summary = eval(
        &cache,
        true,
        out.path(),
        &[
            "followbench",
            "--data",
            data.to_str().unwrap(),
            "--responses",
            data.join("responses_mistral-7b-instruct-v0.3")
                .to_str()
                .unwrap(),
            "--rules-only",
        ],
    );
    assert_eq!(summary["items"], 820);
    let rows = items(out.path());
    let by_rule = rows
        .iter()
        .filter(|r| r["decided_by"].as_str().unwrap().starts_with("rule:"))
        .count();
    let unscored = rows.iter().filter(|r| r["decided_by"] == "none").count();
    assert_eq!((by_rule, unscored), (350, 470));
    // 71 of the 350 rule-checked items pass every constraint (20.29 %), as the reference's
    // rules give on these responses (crates/eval/src/followbench: item-by-item parity test).
    let hsr = headline(&summary, "hsr");
    assert_eq!(
        (hsr["num"].clone(), hsr["den"].clone()),
        (json!(71.0), json!(350.0))
    );
    for r in &rows {
        for field in ["constraint_type", "example_id", "level"] {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
    }
}

#[test]
fn followbench_judges_a_slice_on_the_embedded_model_and_reruns_offline() {
    let data = shared_data().join("followbench");
    let (summary, dir) = run_twice(&[
        "followbench",
        "--data",
        data.to_str().unwrap(),
        "--categories",
        "style",
        "--examples",
        "1",
        "--max-tokens",
        "48",
        "--judge-max-tokens",
        "64",
    ]);
    assert_eq!(summary["items"], 5);
    let rows = items(dir.path());
    assert!(
        rows.iter().all(|r| r["decided_by"] == "judge"),
        "style has no rules"
    );
    let parsed = rows.iter().filter(|r| !r["verdict"].is_null()).count();
    assert_eq!(parsed + summary["unparsed"].as_u64().unwrap() as usize, 5);
    assert_eq!(
        super::read_jsonl(&dir.path().join("responses/style_constraint.jsonl")).len(),
        5
    );
}

/// An eval killed (SIGKILL) several times midway resumes from the cache: no process asks
/// a question whose answer had reached the cache before it started, only calls in flight at a
/// kill are made again, and the finished folder equals an uninterrupted run's, byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_infobench_eval_resumes_without_asking_twice() {
    use demorecon_testkit::{Fault, FaultServer};
    use std::time::{Duration, Instant};

    // A judge on loopback that answers YES after 30 ms: slow enough for kills to land midway.
    let server = FaultServer::start_with(Vec::new(), |_, _| {
        Fault::Stall(
            Duration::from_millis(30),
            Box::new(Fault::Reply("YES".into())),
        )
    })
    .await;
    let data = shared_data().join("infobench");
    let tmp = tempfile::tempdir().unwrap();
    let cmd = |cache: &Path, out: &Path| {
        let mut c = bin();
        c.arg("--cache")
            .arg(cache)
            .arg("--judge")
            .arg(format!("judge@{}", server.base_url()))
            .args([
                "eval",
                "infobench",
                "--quiet",
                "--concurrency",
                "4",
                "--limit",
                "40",
            ])
            .arg("--input")
            .arg(data.join("infobench.jsonl"))
            .arg("--responses")
            .arg(data.join("third_party_gpt4_outputs_with_gpt4_eval.jsonl"))
            .arg("-o")
            .arg(out);
        c
    };
    let reference = tmp.path().join("reference");
    ok(cmd(&tmp.path().join("ref.sqlite"), &reference)
        .output()
        .unwrap());
    let reference_requests = server.requests();

    let cache = tmp.path().join("killed.sqlite");
    let out = tmp.path().join("killed");
    let mut epochs = Vec::new();
    let mut kills = 0;
    for wait_ms in [250u64, 400, 550, 700] {
        epochs.push((server.requests(), super::pipeline::answered(&cache)));
        let mut child = cmd(&cache, &out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut exited = false;
        while started.elapsed() < Duration::from_millis(wait_ms) {
            if child.try_wait().unwrap().is_some() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if exited {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    epochs.push((server.requests(), super::pipeline::answered(&cache)));
    ok(cmd(&cache, &out).output().unwrap());
    assert!(kills >= 1, "no kill landed before the eval finished");

    let log = server.log();
    for (i, (start, answered_before)) in epochs.iter().enumerate() {
        let end = epochs.get(i + 1).map_or(log.len(), |e| e.0);
        for rec in &log[*start..end] {
            let key = super::pipeline::messages_key(&rec.body["messages"]);
            assert!(
                !answered_before.contains(&key),
                "process {i} asked again a question the cache had answered"
            );
        }
    }
    let extra = (log.len() - reference_requests).saturating_sub(reference_requests);
    assert!(
        extra <= kills * server.peak_in_flight(),
        "{extra} repeated requests with {kills} kills (peak in flight {})",
        server.peak_in_flight()
    );
    for file in ["items.jsonl", "summary.json"] {
        assert_eq!(
            std::fs::read(reference.join(file)).unwrap(),
            std::fs::read(out.join(file)).unwrap(),
            "{file} differs from the uninterrupted run"
        );
    }
}
