//! IFEval parity with Google's reference implementation, item by item, on the archived GPT-4
//! responses in the shared benchmark data (`../shared/data` beside the repo, or
//! `$DEMORECON_SHARED_DATA`): every output row of both modes equals the reference's own output,
//! and the summary equals its headline numbers. Also checks the robustness of scoring on the
//! other models' responses (every row scored, no panic) and the end-to-end file outputs.

use std::path::PathBuf;

use demorecon_eval::ifeval::{self, ScoreOptions};
use demorecon_testkit::shared::{read_jsonl, shared_data};
use serde_json::Value;

/// Compares two output files as parsed JSON, row by row, naming the first differing key.
fn compare_rows(mode: &str, ours: &[Value], expected: &[Value]) -> Vec<String> {
    assert_eq!(ours.len(), expected.len(), "{mode}: row count");
    let mut diffs = Vec::new();
    for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
        if a == b {
            continue;
        }
        let (Some(ao), Some(bo)) = (a.as_object(), b.as_object()) else {
            diffs.push(format!("{mode} row {i}: not an object"));
            continue;
        };
        let mut keys: Vec<&String> = ao.keys().chain(bo.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if ao.get(k) != bo.get(k) {
                let ids = b.get("instruction_id_list").cloned().unwrap_or_default();
                diffs.push(format!(
                    "{mode} row {i} key {k:?}: ours {} vs reference {} (instructions {ids})",
                    ao.get(k).map_or("<missing>".into(), Value::to_string),
                    bo.get(k).map_or("<missing>".into(), Value::to_string)
                ));
            }
        }
    }
    diffs
}

#[test]
fn gpt4_responses_match_the_reference_row_by_row() {
    let data = shared_data().join("ifeval");
    let inputs = ifeval::read_inputs(&data.join("input_data_gpt4_20231107_145030.jsonl")).unwrap();
    let responses =
        ifeval::read_responses(&data.join("input_response_data_gpt4_20231107_145030.jsonl"))
            .unwrap();
    let joined = ifeval::join_responses(&inputs, &responses).unwrap();
    let ev = ifeval::evaluate(&inputs, &joined, ScoreOptions::default()).unwrap();

    let out = tempfile::tempdir().unwrap();
    ifeval::write_outputs(out.path(), &ev).unwrap();
    let mut diffs = Vec::new();
    for mode in ["strict", "loose"] {
        let name = format!("eval_results_{mode}.jsonl");
        let ours = read_jsonl(&out.path().join(&name));
        let expected = read_jsonl(&data.join("expected").join(&name));
        assert_eq!(ours.len(), 541);
        diffs.extend(compare_rows(mode, &ours, &expected));
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );

    let s = &ev.summary;
    assert_eq!(
        (s.strict.prompt_level_correct, s.strict.prompt_total),
        (417, 541)
    );
    assert_eq!(
        (
            s.strict.instruction_level_correct,
            s.strict.instruction_total
        ),
        (698, 834)
    );
    assert_eq!(
        (s.loose.prompt_level_correct, s.loose.prompt_total),
        (431, 541)
    );
    assert_eq!(
        (s.loose.instruction_level_correct, s.loose.instruction_total),
        (714, 834)
    );
    let round6 = |x: f64| (x * 1e6).round() / 1e6;
    assert_eq!(round6(s.prompt_level_strict_acc), 0.770795);
    assert_eq!(round6(s.inst_level_strict_acc), 0.836930);
    assert_eq!(round6(s.prompt_level_loose_acc), 0.796673);
    assert_eq!(round6(s.inst_level_loose_acc), 0.856115);

    // The per-tier figures equal the reference summary's too.
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("expected/summary.json")).unwrap())
            .unwrap();
    let ours: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap())
            .unwrap();
    for mode in ["strict", "loose"] {
        for field in [
            "tier0_accuracy",
            "tier1_accuracy",
            "tier1_counts",
            "prompt_level_accuracy",
            "instruction_level_accuracy",
        ] {
            assert_eq!(ours[mode][field], summary[mode][field], "{mode}.{field}");
        }
    }
}

#[test]
fn current_prompt_file_gives_the_same_verdicts_joined_by_key() {
    // The current input_data.jsonl differs from the archived one in key 2785's prompt text
    // only; joining the GPT-4 responses by key must give identical verdicts.
    let data = shared_data().join("ifeval");
    let archived =
        ifeval::read_inputs(&data.join("input_data_gpt4_20231107_145030.jsonl")).unwrap();
    let current = ifeval::read_inputs(&data.join("input_data.jsonl")).unwrap();
    let responses =
        ifeval::read_responses(&data.join("input_response_data_gpt4_20231107_145030.jsonl"))
            .unwrap();
    let by_prompt = ifeval::join_responses(&archived, &responses).unwrap();
    let keyed: Vec<ifeval::ResponseRow> = archived
        .iter()
        .zip(&by_prompt)
        .map(|(inp, r)| ifeval::ResponseRow {
            key: Some(inp.key),
            prompt: None,
            response: r.clone(),
        })
        .collect();
    let joined = ifeval::join_responses(&current, &keyed).unwrap();
    let a = ifeval::evaluate(&archived, &by_prompt, ScoreOptions::default()).unwrap();
    let b = ifeval::evaluate(&current, &joined, ScoreOptions::default()).unwrap();
    for (x, y) in a
        .strict
        .iter()
        .zip(&b.strict)
        .chain(a.loose.iter().zip(&b.loose))
    {
        assert_eq!(x.follow_instruction_list, y.follow_instruction_list);
    }
    // Joining the current file by prompt text misses exactly key 2785.
    let err = ifeval::join_responses(&current, &responses)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2785") && err.starts_with("1 prompt"), "{err}");
}

#[test]
fn other_models_responses_score_without_error() {
    let data = shared_data().join("ifeval");
    let inputs = ifeval::read_inputs(&data.join("input_data_gpt4_20231107_145030.jsonl")).unwrap();
    let mut names: Vec<PathBuf> = std::fs::read_dir(data.join("more_responses"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 4);
    for path in names {
        let responses = ifeval::read_responses(&path).unwrap();
        let joined = ifeval::join_responses(&inputs, &responses).unwrap();
        let ev = ifeval::evaluate(&inputs, &joined, ScoreOptions { strip_think: true }).unwrap();
        let s = &ev.summary;
        assert_eq!(s.strict.instruction_total, 834, "{}", path.display());
        // Loose never scores below strict.
        assert!(s.loose.instruction_level_correct >= s.strict.instruction_level_correct);
        assert!(s.loose.prompt_level_correct >= s.strict.prompt_level_correct);
        assert!(
            s.strict.prompt_level_accuracy > 0.1,
            "{}: implausibly low",
            path.display()
        );
    }
}

#[test]
fn bad_lines_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    std::fs::write(&path, "{\"prompt\":\"a\",\"response\":\"b\"}\n\n{oops\n").unwrap();
    let err = ifeval::read_responses(&path).unwrap_err().to_string();
    assert!(err.contains("r.jsonl:3:"), "{err}");
    std::fs::write(&path, "{\"response\":\"b\"}\n").unwrap();
    let err = ifeval::read_responses(&path).unwrap_err().to_string();
    assert!(err.contains(":1:") && err.contains("key"), "{err}");
}

#[test]
fn lint_reports_the_known_data_quirks() {
    let data = shared_data().join("ifeval");
    let inputs = ifeval::read_inputs(&data.join("input_data.jsonl")).unwrap();
    let issues = ifeval::lint::lint(&inputs);
    let has = |key: i64, kind: &str| issues.iter().any(|i| i.key == key && i.kind == kind);
    assert!(
        has(337, "number_not_in_prompt"),
        "key 337: 400 words vs kwargs 336"
    );
    assert!(has(2078, "vague_vs_exact"), "key 2078: one bullet vs a few");
    assert!(has(30, "duplicate_id"));
    assert!(has(1040, "duplicate_id"));
    assert!(
        !issues.iter().any(|i| i.kind == "invalid_kwargs"),
        "all official kwargs are valid"
    );
}
