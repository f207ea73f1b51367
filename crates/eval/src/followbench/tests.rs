//! FollowBench tests: rule parity with the reference on real responses, loading and joining,
//! the judge path against a scripted model, and the rules-only numbers of the shared Mistral
//! responses.

use std::collections::{BTreeMap, BTreeSet};

use demorecon_llm::ChatRequest;
use demorecon_testkit::scripted::Scripted;
use demorecon_testkit::shared::shared_data;

use super::*;
use crate::bench::{RunOptions, run};

/// The reference's verdicts on the Mistral responses, from
/// `scripts/followbench/rule_verdicts.py` (ids and booleans only).
const EXPECTED: &str = include_str!("expected_rule_verdicts.jsonl");
const MISTRAL: &str = "followbench/responses_mistral-7b-instruct-v0.3";

fn data_dir() -> PathBuf {
    shared_data().join("followbench")
}

#[test]
fn rule_verdicts_equal_the_reference_item_by_item() {
    let items = load(&data_dir()).unwrap();
    let texts = read_responses(&shared_data().join(MISTRAL), &items).unwrap();
    let expected: BTreeMap<String, bool> = EXPECTED
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_owned(),
                v["verdict"].as_bool().unwrap(),
            )
        })
        .collect();
    let mut ours = BTreeMap::new();
    for (it, text) in items.iter().zip(&texts) {
        if let Some(rule) = it.rule {
            let v = rule.check(text, &it.target, it.level).unwrap();
            ours.insert(it.id.clone(), v.pass);
        }
    }
    let only_ours: Vec<_> = ours.keys().filter(|k| !expected.contains_key(*k)).collect();
    let only_ref: Vec<_> = expected.keys().filter(|k| !ours.contains_key(*k)).collect();
    let differ: Vec<_> = ours
        .iter()
        .filter(|(k, v)| expected.get(*k).is_some_and(|e| e != *v))
        .map(|(k, v)| format!("{k} (ours {v})"))
        .collect();
    assert!(
        only_ours.is_empty() && only_ref.is_empty() && differ.is_empty(),
        "rule-checked only here: {only_ours:?}\nonly in the reference: {only_ref:?}\nverdicts differ: {differ:?}"
    );
    assert_eq!(ours.len(), 350);
    let mut by_rule: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for it in items.iter().filter(|it| it.rule.is_some()) {
        let e = by_rule.entry(it.rule.unwrap().name()).or_default();
        e.0 += 1;
        e.1 += usize::from(ours[&it.id]);
    }
    eprintln!("rule items (items, passed) by rule: {by_rule:?}");
}

#[tokio::test]
async fn mistral_rules_only() {
    let bench = FollowBench::load(
        &data_dir(),
        PromptSet::builtin(),
        Options {
            rules_only: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(bench.items().len(), 820);
    let counts = bench.rule_counts();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("content".to_owned(), 60),
            ("example".to_owned(), 200),
            ("format".to_owned(), 10),
            ("mixed".to_owned(), 40),
            ("situation".to_owned(), 40),
        ])
    );
    let responses = bench.given_responses(&shared_data().join(MISTRAL)).unwrap();
    let opts = RunOptions {
        progress: false,
        ..RunOptions::default()
    };
    let (summary, records) = run(&bench, responses, None, opts).await.unwrap();
    assert_eq!(records.len(), 820);
    assert_eq!(summary.details["decided_by"]["none"], json!(470));
    assert_eq!(summary.details["not_scored"], json!(470));
    assert_eq!(summary.unparsed, 0);
    for r in records.iter().filter(|r| r.decided_by == "none") {
        assert!(r.scores.is_empty() && r.verdict.is_null() && r.note.is_some());
    }
    // Every headline agrees with the reference verdicts summed directly.
    let expected: Vec<(String, bool)> = EXPECTED
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_owned(),
                v["verdict"].as_bool().unwrap(),
            )
        })
        .collect();
    let passed = expected.iter().filter(|(_, v)| *v).count();
    let hsr = summary.metric("hsr").unwrap();
    assert_eq!((hsr.num, hsr.den), (Some(passed as f64), Some(350.0)));

    let pct = |v: &Value| {
        v.as_f64()
            .map_or("-".to_owned(), |x| format!("{:.2}", x * 100.0))
    };
    let mut table = String::from("FollowBench, Mistral-7B-Instruct-v0.3, rule items only\n");
    table.push_str("category   n        L1     L2     L3     L4     L5 | HSR   SSR   CSL\n");
    for t in CONSTRAINT_TYPES {
        let c = &summary.details["by_category"][t];
        let n = c["n"].as_u64().unwrap_or(0);
        if n == 0 {
            continue;
        }
        let levels: Vec<String> = (1..=5)
            .map(|l| pct(&c["levels"][l.to_string()]["hsr"]))
            .collect();
        table.push_str(&format!(
            "{t:<10} {n:<4} {} | {} {} {:.1} ({} groups)\n",
            levels
                .iter()
                .map(|v| format!("{v:>6}"))
                .collect::<Vec<_>>()
                .join(" "),
            pct(&c["hsr"]),
            pct(&c["ssr"]),
            c["csl"].as_f64().unwrap_or(f64::NAN),
            c["csl_groups"]
        ));
    }
    let h = |k: &str| {
        summary
            .metric(k)
            .and_then(|m| m.value)
            .map_or(f64::NAN, |v| v * 100.0)
    };
    table.push_str(&format!(
        "all        {:<4} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} | {:.2} {:.2} {:.2}\n",
        350,
        h("hsr_l1"),
        h("hsr_l2"),
        h("hsr_l3"),
        h("hsr_l4"),
        h("hsr_l5"),
        h("hsr"),
        h("ssr"),
        summary.details["csl"].as_f64().unwrap_or(f64::NAN)
    ));
    eprintln!("{table}");
    // A rule's verdict is all-or-nothing: per level, SSR equals HSR.
    let ex = &summary.details["by_category"]["example"];
    for l in 1..=5 {
        let at = &ex["levels"][l.to_string()];
        assert_eq!(at["hsr"], at["ssr"], "level {l}");
        assert_eq!(at["n"], json!(40));
    }
    assert_eq!(ex["csl_groups"], json!(40));
}

/// A data folder with one content group (levels 0–3, one judge source) and one E2E group.
fn tiny_data(dir: &Path) {
    let mut lines = Vec::new();
    for level in 0..=3 {
        lines.push(json!({"example_id": 1, "category": "content", "source": "quora", "level": level,
            "instruction": format!("Instruction {level}: write about tea{}.", " briefly".repeat(level)), "target": ""}));
    }
    for level in 0..=1 {
        lines.push(
            json!({"example_id": 2, "category": "content", "source": "E2E", "level": level,
            "instruction": format!("Make a table {level}."), "target": "name[X]"}),
        );
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(data_file(dir, "content"), text).unwrap();
}

#[test]
fn loading_builds_ids_rules_and_evolution_paths() {
    let dir = tempfile::tempdir().unwrap();
    tiny_data(dir.path());
    let items = load_types(dir.path(), &["content"]).unwrap();
    let ids: Vec<&str> = items.iter().map(|it| it.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "content/1/L1",
            "content/1/L2",
            "content/1/L3",
            "content/2/L1"
        ]
    );
    assert_eq!(items[2].evolution.len(), 4);
    assert!(items[2].evolution[0].starts_with("Instruction 0"));
    assert!(items[2].evolution[3].starts_with("Instruction 3"));
    assert_eq!(items[3].rule, Some(Rule::E2e));
    assert!(items[3].evolution.is_empty());
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("situation_constraints.jsonl"), "{err}");
}

#[test]
fn bad_data_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = data_file(dir.path(), "content");
    let cases = [
        (
            "{\"example_id\": 1, \"level\": 0, \"instruction\": \"a\"}\n{not json}\n",
            ":2:",
        ),
        (
            "{\"example_id\": 1, \"level\": 2, \"instruction\": \"a\", \"source\": \"quora\"}\n",
            "level 0 is missing",
        ),
        (
            "{\"example_id\": 1, \"level\": 0, \"instruction\": \"a\"}\n{\"example_id\": 1, \"level\": 0, \"instruction\": \"b\"}\n",
            "appears twice (first on line 1)",
        ),
        (
            "{\"example_id\": 1, \"level\": 1, \"instruction\": \"a\", \"source\": \"CONLL2003\", \"target\": \"Bonn\"}\n",
            "rule:CONLL2003",
        ),
        (
            "{\"example_id\": 1, \"level\": 7, \"instruction\": \"a\"}\n",
            "above 5",
        ),
        (
            "{\"example_id\": 1, \"level\": 1, \"instruction\": \" \", \"source\": \"E2E\"}\n",
            "empty instruction",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&p, text).unwrap();
        let err = load_types(dir.path(), &["content"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("content_constraints.jsonl"), "{err}");
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn responses_join_by_instruction_text_and_name_the_missing() {
    let dir = tempfile::tempdir().unwrap();
    tiny_data(dir.path());
    let items = load_types(dir.path(), &["content"]).unwrap();
    let texts: Vec<String> = items
        .iter()
        .map(|it| format!("answer to {}", it.id))
        .collect();
    let out = dir.path().join("out");
    let written = write_responses(&out, &items, &texts).unwrap();
    assert_eq!(written, [responses_file(&out, "content")]);
    assert_eq!(read_responses(&out, &items).unwrap(), texts);

    // The shared Mistral files use "prompt"; "response" works as the text too.
    let rows = [
        json!({"prompt": items[3].instruction, "choices": [{"message": {"content": "x"}}]}),
        json!({"prompt": items[0].instruction, "response": "y"}),
        json!({"prompt": items[0].instruction, "response": "second copy is ignored"}),
    ];
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(responses_file(&out, "content"), text).unwrap();
    let err = read_responses(&out, &items).unwrap_err().to_string();
    assert!(
        err.contains("2 of 4 items have no response") && err.contains("content/1/L2, content/1/L3"),
        "{err}"
    );
    let two = [items[0].clone(), items[3].clone()];
    assert_eq!(read_responses(&out, &two).unwrap(), ["y", "x"]);

    std::fs::write(responses_file(&out, "content"), "{\"prompt\": \"a\"}\n").unwrap();
    let err = read_responses(&out, &items).unwrap_err().to_string();
    assert!(
        err.contains("content_constraint.jsonl:1:") && err.contains("no response text"),
        "{err}"
    );
    let err = read_responses(&dir.path().join("nowhere"), &items)
        .unwrap_err()
        .to_string();
    assert!(err.contains("content_constraint.jsonl not found"), "{err}");
}

fn tiny_bench(opts: Options) -> (tempfile::TempDir, FollowBench) {
    let dir = tempfile::tempdir().unwrap();
    tiny_data(dir.path());
    let items = load_types(dir.path(), &["content"]).unwrap();
    let bench = FollowBench::new(items, PromptSet::builtin(), opts).unwrap();
    (dir, bench)
}

/// The single user message of a request.
fn user_text(req: &ChatRequest) -> &str {
    assert_eq!(req.messages.len(), 1, "one user message");
    &req.messages[0].content
}

/// Asserts that `texts` occur in `hay` in this order.
fn in_order(hay: &str, texts: &[&str]) {
    let mut pos = 0;
    for t in texts {
        let at = hay[pos..]
            .find(t)
            .unwrap_or_else(|| panic!("{t:?} not found after byte {pos} of:\n{hay}"));
        pos += at + t.len();
    }
}

#[tokio::test]
async fn judge_path_carries_the_evolution_and_reasks_once() {
    let (_dir, bench) = tiny_bench(Options {
        reask_strict: true,
        ..Options::default()
    });
    let item = &bench.items()[2]; // content/1/L3
    let model = Scripted::new(&[
        "I cannot decide.",
        "Constraint review...\n['YES', 'NO', 'YES']",
    ]);
    let judge = Judge::new(model.clone(), None, &bench.prompt_version());
    let rec = bench
        .score(item, "Tea is a drink.", Some(&judge))
        .await
        .unwrap();

    let seen = model.seen();
    assert_eq!(seen.len(), 2, "exactly one re-ask");
    for req in &seen {
        let text = user_text(req);
        let path: Vec<&str> = item.evolution.iter().map(String::as_str).collect();
        let mut want = path.clone();
        want.push("Tea is a drink.");
        in_order(text, &want);
        assert!(text.contains("content constraint"), "{text}");
        assert!(text.contains("3 added constraints"), "{text}");
        assert_eq!(req.sampling.temperature, 0.0);
        assert_eq!(req.sampling.max_tokens, 1024);
        assert_eq!(
            req.prompt_version.as_deref(),
            Some(bench.prompt_version().as_str())
        );
    }
    assert_ne!(
        user_text(&seen[0]),
        user_text(&seen[1]),
        "the re-ask uses [strict]"
    );
    assert_ne!(seen[0].sampling.seed, seen[1].sampling.seed);
    assert_eq!(rec.decided_by, "judge");
    assert_eq!(rec.judge_raw.len(), 2);
    assert_eq!(rec.verdict["constraints"], json!([true, false, true]));
    assert_eq!(rec.scores["ssr_l3"], [2.0, 3.0]);
    assert_eq!(rec.scores["hsr_l3"], [0.0, 1.0]);
    assert_eq!(rec.extra["level"], json!(3));
    assert_eq!(rec.extra["source"], json!("quora"));
    assert!(
        rec.note.as_deref().unwrap().contains("strict"),
        "{:?}",
        rec.note
    );

    // A reply that parses is not re-asked.
    let model = Scripted::new(&["['YES', 'YES', 'YES']"]);
    let judge = Judge::new(model.clone(), None, &bench.prompt_version());
    let rec = bench.score(item, "x", Some(&judge)).await.unwrap();
    assert_eq!(model.seen().len(), 1);
    assert_eq!(rec.scores["hsr"], [1.0, 1.0]);
    assert_eq!(rec.note, None);
    assert_eq!(judge.info().reported.as_deref(), Some("judge-1"));
}

#[tokio::test]
async fn unparsed_replies_are_recorded_not_scored() {
    let (_dir, bench) = tiny_bench(Options::default());
    let item = &bench.items()[0]; // content/1/L1
    let model = Scripted::new(&["It looks fine to me."]);
    let judge = Judge::new(model.clone(), None, &bench.prompt_version());
    let rec = bench.score(item, "x", Some(&judge)).await.unwrap();
    assert_eq!(model.seen().len(), 1, "no re-ask without reask_strict");
    let text = user_text(&model.seen()[0]).to_owned();
    assert!(
        text.contains("1 added constraint.") && !text.contains("1 added constraints"),
        "{text}"
    );
    assert!(text.contains("Python list with 1 element"), "{text}");
    assert_eq!(rec.decided_by, "judge");
    assert!(rec.verdict.is_null());
    assert!(rec.scores.is_empty());
    assert!(
        rec.note.as_deref().unwrap().contains("unparsed"),
        "{:?}",
        rec.note
    );

    // Still unparsed after the strict re-ask: two replies kept, no scores.
    let (_dir, strict) = tiny_bench(Options {
        reask_strict: true,
        ..Options::default()
    });
    let model = Scripted::new(&["hmm", "still hmm"]);
    let judge = Judge::new(model.clone(), None, &strict.prompt_version());
    let rec = strict
        .score(&strict.items()[1], "x", Some(&judge))
        .await
        .unwrap();
    assert_eq!(model.seen().len(), 2);
    assert_eq!(rec.judge_raw, ["hmm", "still hmm"]);
    assert!(rec.scores.is_empty());
    let summary = strict.summarize(&[rec]);
    assert_eq!(summary.unparsed, 1);
}

#[tokio::test]
async fn rules_decide_without_a_judge_and_judge_items_need_one() {
    let (_dir, bench) = tiny_bench(Options::default());
    let e2e = &bench.items()[3];
    let rec = bench.score(e2e, "name[X]", None).await.unwrap();
    assert_eq!(rec.decided_by, "rule:E2E");
    assert_eq!(rec.verdict, json!({"hard": true, "met": 1, "of": 1}));
    assert_eq!(rec.scores["hsr_l1"], [1.0, 1.0]);
    let err = bench.score(&bench.items()[0], "x", None).await.unwrap_err();
    assert!(err.to_string().contains("content/1/L1"), "{err}");

    let (_dir, rules) = tiny_bench(Options {
        rules_only: true,
        ..Options::default()
    });
    let rec = rules.score(&rules.items()[0], "x", None).await.unwrap();
    assert_eq!(rec.decided_by, "none");
    assert!(rec.scores.is_empty() && rec.note.is_some());
}

#[test]
fn prompt_wording_follows_the_category_and_the_answer_request_is_plain() {
    let prompts = PromptSet::builtin();
    let mut item = Item {
        id: "mixed/3/L2".into(),
        constraint_type: "mixed".into(),
        example_id: 3,
        level: 2,
        source: "x".into(),
        instruction: "c".into(),
        target: String::new(),
        rule: None,
        evolution: vec!["a".into(), "b".into(), "c".into()],
    };
    let req = judge::request(&prompts, judge::Template::Judge, &item, "ans", 100).unwrap();
    let text = user_text(&req);
    assert!(text.contains("one constraint was added"), "{text}");
    assert!(text.contains("Python list with 2 elements"), "{text}");
    item.constraint_type = "situation".into();
    let req = judge::request(&prompts, judge::Template::Strict, &item, "ans", 100).unwrap();
    let text = user_text(&req);
    assert!(
        text.contains("situation constraint (a description"),
        "{text}"
    );
    assert!(text.contains("['YES or NO', 'YES or NO']"), "{text}");
    assert_eq!(req.sampling.max_tokens, 100);

    let (_dir, bench) = tiny_bench(Options::default());
    let it = &bench.items()[1];
    let req = bench.request(it, 321);
    assert_eq!(req.messages, [Message::user(it.instruction.clone())]);
    assert_eq!(req.sampling.max_tokens, 321);
    assert_eq!(req.sampling.temperature, 0.0);
    assert_eq!(
        req.sampling.seed,
        demorecon_judge::ask::unit_seed(&it.id, "followbench/answer")
    );
    let ids: BTreeSet<u64> = bench
        .items()
        .iter()
        .map(|it| bench.request(it, 1).sampling.seed)
        .collect();
    assert_eq!(ids.len(), bench.items().len(), "a seed per item");
}
