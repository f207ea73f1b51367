//! `demorecon run` and friends end to end against a loopback endpoint that answers like a
//! (very predictable) model: byte-stable outputs, stage-by-stage runs equal to one `run`,
//! exactly-once resume under `kill -9`, faults that end in quarantine with counts that add
//! up, bad seed files, shards and merge, and the FGIV-Eval split kept out of training data.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use demorecon_pipeline::build::DATA_FILES;
use demorecon_testkit::synth::fnv1a;
use demorecon_testkit::{Fault, FaultServer};
use serde_json::{Value, json};

use super::{bin, ok};

fn last_user(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A model that follows the protocol predictably: keeps seeds unless they say DROP, splits
/// them into sentences, replaces the first offered span with "CHANGED …", answers with a
/// hash of the prompt (plus "CHANGED" when the prompt has it, and the keywords a prompt asks
/// it to include), and judges a response
/// satisfied exactly when it contains "CHANGED". So seed responses violate every modified
/// requirement and variant responses satisfy it: every verified pair is valid.
pub fn scripted_reply(body: &Value) -> String {
    let user = last_user(body);
    let format = &body["response_format"];
    let schema_name = format["json_schema"]["name"].as_str();
    match schema_name {
        Some("filter") => json!({"keep": !user.contains("DROP"), "reason": "scripted"}).to_string(),
        Some("decomposition") => {
            let instruction = user
                .split_once("Instruction:\n")
                .map_or(user.as_str(), |x| x.1);
            let subs: Vec<String> = instruction
                .split(". ")
                .map(|s| s.trim().trim_end_matches('.').to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            json!({"facts": [], "sub_instructions": subs}).to_string()
        }
        Some("variant") => {
            let spans = &format["json_schema"]["schema"]["properties"]["find"]["enum"];
            let find = spans[0].as_str().unwrap_or("x").to_owned();
            let requirement = user.rsplit_once(": ").map_or("", |x| x.1);
            json!({
                "find": find, "replace": format!("CHANGED {find}"), "edit_kind": "contradict",
                "modified_sub_instruction": format!("CHANGED {requirement}"),
                "valid": true, "reason": "scripted"
            })
            .to_string()
        }
        Some("judgement") => {
            let response = user.split_once("Response:\n").map_or("", |x| x.1);
            json!({"reason": "scripted", "satisfied": response.contains("CHANGED")}).to_string()
        }
        _ => format!(
            "Answer {:016x}{}{}",
            fnv1a(user.as_bytes()),
            if user.contains("CHANGED") {
                " CHANGED"
            } else {
                ""
            },
            // It follows a keyword requirement (what a verifiable variant may add).
            user.split_once("Include the keywords ")
                .map(|(_, rest)| format!(" {}", rest.split(" in your").next().unwrap_or("")))
                .unwrap_or_default()
        ),
    }
}

pub(super) async fn scripted_server(stall: Duration) -> FaultServer {
    FaultServer::start_with(Vec::new(), move |body, _| {
        let reply = Fault::Reply(scripted_reply(body));
        if stall.is_zero() {
            reply
        } else {
            Fault::Stall(stall, Box::new(reply))
        }
    })
    .await
}

/// Sixteen seeds: nine with four requirements (FGIV-Eval candidates), four with three, one
/// with a response of its own, one the filter drops, one too simple to vary.
pub(super) fn write_seeds(dir: &Path) -> PathBuf {
    let topics = [
        "a harbour",
        "a library",
        "a bakery",
        "a mountain hut",
        "a night train",
        "a garden",
        "a museum",
        "a lighthouse",
        "a market",
        "a school trip",
        "a bike repair",
        "a concert",
        "a snowstorm",
    ];
    let mut lines = Vec::new();
    for (i, topic) in topics.iter().enumerate() {
        let fourth = if i < 9 {
            ". Mention the colour blue"
        } else {
            ""
        };
        lines.push(json!({
            "id": format!("t-{i:02}"),
            "instruction": format!("Write a story about {topic}. Make it cheerful. Address it to my aunt{fourth}."),
        }));
    }
    lines.push(json!({"id": "given", "instruction": "Describe a river. Keep it calm. Use an old word.", "response": "A calm river, in the old style."}));
    lines.push(json!({"id": "dropped", "instruction": "DROP this. It refers to the text above."}));
    lines.push(json!({"id": "simple", "instruction": "Say hello."}));
    let path = dir.join("seeds.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

pub(super) fn run_cmd(server: &FaultServer, cache: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = bin();
    cmd.arg("--backend")
        .arg(format!("scripted@{}", server.base_url()))
        .arg("--cache")
        .arg(cache)
        .args(args);
    cmd
}

fn files(run: &Path) -> BTreeMap<&'static str, Vec<u8>> {
    DATA_FILES
        .iter()
        .map(|f| {
            let bytes = std::fs::read(run.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            (*f, bytes)
        })
        .collect()
}

fn lines(run: &Path, file: &str) -> Vec<Value> {
    std::fs::read_to_string(run.join(file))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(super) fn manifest(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

pub(super) fn assert_same_files(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    for f in DATA_FILES {
        assert!(
            fa[f] == fb[f],
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_builds_every_file_byte_stable_and_stage_by_stage_equal() {
    let server = scripted_server(Duration::ZERO).await;
    let tmp = tempfile::tempdir().unwrap();
    let seeds = write_seeds(tmp.path());
    let run = tmp.path().join("run");
    let cache = tmp.path().join("cache.sqlite");
    let out = ok(run_cmd(&server, &cache, &["run"])
        .arg(&seeds)
        .arg("-o")
        .arg(&run)
        .args(["--eval-seeds", "2"])
        .output()
        .unwrap());
    let table = String::from_utf8_lossy(&out.stderr);
    assert!(table.contains("pairs valid A / R"), "{table}");

    let m = manifest(&run);
    let c = &m["counts"];
    assert_eq!(c["seeds_in"], 16);
    assert_eq!(c["seeds_filtered_out"], 1);
    assert_eq!(c["seeds_quarantined"], 1);
    assert_eq!(c["seeds_done"], 14);
    assert_eq!(c["seeds_pending"], 0);
    assert_eq!(
        c["quarantined_by_reason"]["decompose/too_few_sub_instructions"],
        1
    );
    // 9 × 4 + 4 × 3 + 3 (the given seed) sub-instructions, all varied validly.
    assert_eq!(c["variants"], 51);
    assert_eq!(c["variants_valid"], 51);
    assert_eq!(c["pairs_valid_fgiv_a"], 51);
    assert_eq!(c["pairs_valid_fgiv_r"], 51);
    assert_eq!(c["seed_responses_given"], 1);
    assert_eq!(c["fgiv_eval_seeds"], 2);
    assert!(m["prompts"]["vary"].as_str().unwrap().starts_with("vary/"));
    assert_eq!(m["models"]["generator"]["model"], "scripted");

    // The given response is kept; generated ones are the model's.
    let responses = lines(&run, "responses.jsonl");
    let given = responses.iter().find(|r| r["unit"] == "given").unwrap();
    assert_eq!(given["text"], "A calm river, in the old style.");
    assert_eq!(given["source"], "given");

    // DPO rows: TRL conversational form, the seed's response rejected.
    let dpo = lines(&run, "datasets/dpo_fgiv_a.jsonl");
    assert_eq!(dpo.len(), 51 - 8, "two eval seeds hold out 8 pairs");
    let row = &dpo[0];
    assert_eq!(row["prompt"][0]["role"], "user");
    assert!(
        row["prompt"][0]["content"]
            .as_str()
            .unwrap()
            .contains("CHANGED")
    );
    assert!(
        row["chosen"][0]["content"]
            .as_str()
            .unwrap()
            .contains("CHANGED")
    );
    assert!(
        !row["rejected"][0]["content"]
            .as_str()
            .unwrap()
            .contains("CHANGED")
    );
    assert_eq!(row["rejected"][0]["role"], "assistant");

    // Splits by seed: no FGIV-Eval seed in any training file.
    let eval = lines(&run, "datasets/fgiv_eval.jsonl");
    assert_eq!(eval.len(), 8, "4 prompts for each of 2 seeds");
    let held_out: HashSet<String> = eval
        .iter()
        .map(|r| r["seed_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(held_out.len(), 2);
    for file in [
        "datasets/sft_fgiv_a.jsonl",
        "datasets/sft_fgiv_r.jsonl",
        "datasets/dpo_fgiv_a.jsonl",
        "datasets/dpo_fgiv_r.jsonl",
    ] {
        for row in lines(&run, file) {
            let id = row["seed_id"].as_str().unwrap();
            assert!(!held_out.contains(id), "eval seed {id} leaked into {file}");
        }
    }
    for row in &eval {
        let subs = row["sub_instructions"].as_array().unwrap();
        assert_eq!(subs.len(), 4);
        let k = row["modified_index"].as_u64().unwrap() as usize;
        assert_eq!(subs[k], row["modified_sub_instruction"]);
    }
    let detection = lines(&run, "datasets/fgiv_detection.jsonl");
    let yes = detection.iter().filter(|r| r["label"] == "yes").count();
    assert_eq!(yes * 2, detection.len(), "balanced");
    assert_eq!(yes, 8);
    // SFT: seeds and variants, as messages.
    let sft = lines(&run, "datasets/sft_fgiv_r.jsonl");
    assert_eq!(sft.len(), 12 + 51 - 8);
    assert_eq!(sft[0]["messages"][1]["role"], "assistant");

    // The same command again, from scratch: the same bytes.
    let again = tmp.path().join("again");
    ok(
        run_cmd(&server, &tmp.path().join("cache2.sqlite"), &["run"])
            .arg(&seeds)
            .arg("-o")
            .arg(&again)
            .args(["--eval-seeds", "2"])
            .output()
            .unwrap(),
    );
    assert_same_files(&run, &again);

    // Stage by stage into another folder: the same bytes as one `run`.
    let staged = tmp.path().join("staged");
    let cache3 = tmp.path().join("cache3.sqlite");
    ok(run_cmd(&server, &cache3, &["filter"])
        .arg(&staged)
        .arg("--seeds")
        .arg(&seeds)
        .output()
        .unwrap());
    let after_filter = manifest(&staged);
    assert_eq!(after_filter["counts"]["seeds_filtered_out"], 1);
    assert_eq!(
        after_filter["counts"]["seeds_pending"], 15,
        "kept, not yet decomposed"
    );
    assert_eq!(after_filter["counts"]["variants"], 0);
    for stage in ["decompose", "vary", "respond", "verify"] {
        ok(run_cmd(&server, &cache3, &[stage])
            .arg(&staged)
            .args(["--eval-seeds", "2"])
            .output()
            .unwrap());
    }
    ok(bin()
        .args(["build"])
        .arg(&staged)
        .args(["--eval-seeds", "2"])
        .output()
        .unwrap());
    assert_same_files(&run, &staged);

    // A resumed run must be the same run.
    let out = run_cmd(&server, &cache, &["run"])
        .arg(&seeds)
        .arg("-o")
        .arg(&run)
        .args(["--max-edit-ratio", "0.9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("options.max_edit_ratio was 0.5, now 0.9"),
        "{err}"
    );
}

/// Request messages as one comparable string.
pub(super) fn messages_key(messages: &Value) -> String {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}\u{1}{}",
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("\u{2}")
}

/// The requests the cache holds answers for.
pub(super) fn answered(cache: &Path) -> HashSet<String> {
    if !cache.exists() {
        return HashSet::new();
    }
    let conn = rusqlite::Connection::open(cache).unwrap();
    let mut stmt = conn.prepare("SELECT request FROM calls").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| {
            let req: Value = serde_json::from_str(&r.unwrap()).unwrap();
            messages_key(&req["messages"])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_runs_resume_without_repeating_a_call_and_end_identical() {
    // Slow enough replies that ten kills land before the run can finish, even on an idle machine.
    let server = scripted_server(Duration::from_millis(40)).await;
    let tmp = tempfile::tempdir().unwrap();
    let seeds = write_seeds(tmp.path());
    let args = |run: &Path| -> Vec<String> {
        vec![
            "run".into(),
            seeds.display().to_string(),
            "-o".into(),
            run.display().to_string(),
            "--jobs".into(),
            "2".into(),
            "--eval-seeds".into(),
            "2".into(),
        ]
    };
    let reference = tmp.path().join("reference");
    let out = run_cmd(&server, &tmp.path().join("ref.sqlite"), &[])
        .args(args(&reference))
        .output()
        .unwrap();
    ok(out);
    let reference_requests = server.requests();

    let run = tmp.path().join("killed");
    let cache = tmp.path().join("killed.sqlite");
    // A fixed pseudo-random schedule of kill moments, 40–240 ms after start.
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut kills = 0;
    let mut epochs: Vec<(usize, HashSet<String>)> = Vec::new();
    let mut finished = false;
    for _ in 0..40 {
        let before = server.requests();
        let answered_before = answered(&cache);
        let mut child = run_cmd(&server, &cache, &[])
            .args(args(&run))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let wait = Duration::from_millis(40 + rng % 200);
        let started = Instant::now();
        let mut exited = None;
        while started.elapsed() < wait {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        epochs.push((before, answered_before));
        match exited {
            Some(status) => {
                assert!(status.success(), "an unkilled run failed: {status:?}");
                finished = true;
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
        if kills >= 10 && epochs.len() >= 10 {
            break;
        }
    }
    if !finished {
        let before = server.requests();
        let answered_before = answered(&cache);
        epochs.push((before, answered_before));
        ok(run_cmd(&server, &cache, &[])
            .args(args(&run))
            .output()
            .unwrap());
    }
    assert!(
        kills >= 10,
        "only {kills} kills landed before the run finished"
    );

    // Nothing whose answer had reached the cache was asked again in a later process.
    let log = server.log();
    for (i, (start, answered_before)) in epochs.iter().enumerate() {
        let end = epochs.get(i + 1).map_or(log.len(), |e| e.0);
        for rec in &log[*start..end] {
            let key = messages_key(&rec.body["messages"]);
            assert!(
                !answered_before.contains(&key),
                "process {i} repeated a call that had already been answered"
            );
        }
    }
    // Only calls in flight at a kill are made again: at most the peak in flight per kill.
    let interrupted_requests = log.len() - reference_requests;
    assert!(
        interrupted_requests <= reference_requests + kills * server.peak_in_flight(),
        "{interrupted_requests} requests for a run of {reference_requests} with {kills} kills"
    );
    assert_same_files(&reference, &run);
    let m = manifest(&run);
    assert_eq!(m["counts"], manifest(&reference)["counts"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_end_in_quarantine_with_reasons_and_counts_that_add_up() {
    // Errors that persist through the retries, stalls past the timeout, bodies that are not
    // JSON, and structured answers that are garbage — chosen by a hash of the request, so
    // each request always meets the same fate.
    let server = FaultServer::start_with(Vec::new(), |body, _| {
        let user = last_user(body);
        match fnv1a(user.as_bytes()) % 9 {
            0 => Fault::Status(500),
            1 => Fault::Stall(
                Duration::from_secs(3),
                Box::new(Fault::Reply("late".into())),
            ),
            2 => Fault::Malformed,
            3 if !body["response_format"].is_null() => Fault::Reply("{\"not\": \"it\"".into()),
            _ => Fault::Reply(scripted_reply(body)),
        }
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let seeds = write_seeds(tmp.path());
    let config = tmp.path().join("demorecon.toml");
    std::fs::write(
        &config,
        "[roles.default]\nmax_retries = 1\ntimeout_s = 0.5\n",
    )
    .unwrap();
    let run = tmp.path().join("run");
    let out = run_cmd(&server, &tmp.path().join("cache.sqlite"), &["run"])
        .arg("--config")
        .arg(&config)
        .arg(&seeds)
        .arg("-o")
        .arg(&run)
        .output()
        .unwrap();
    ok(out);
    let m = manifest(&run);
    let c = &m["counts"];
    assert_eq!(
        c["seeds_pending"], 0,
        "every seed is done or set aside: {c}"
    );
    assert_eq!(c["variants_pending"], 0);
    let quarantine = lines(&run, "quarantine.jsonl");
    assert!(!quarantine.is_empty());
    let by_reason: usize = c["quarantined_by_reason"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap() as usize)
        .sum();
    assert_eq!(by_reason, quarantine.len(), "{c}");
    let kinds: HashSet<&str> = quarantine
        .iter()
        .map(|q| q["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains("llm_error"), "{kinds:?}");
    assert!(kinds.contains("unparsable"), "{kinds:?}");
    for q in &quarantine {
        assert!(!q["reason"].as_str().unwrap().is_empty());
        assert!(q["stage"].is_string() && q["seed_id"].is_string());
    }
    let seeds_accounted = ["seeds_filtered_out", "seeds_quarantined", "seeds_done"]
        .iter()
        .map(|k| c[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(seeds_accounted, 16);
}

#[test]
fn bad_seed_files_name_file_and_line_and_skip_bad_seeds_sets_them_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 5] = [
        (
            "malformed",
            b"{\"instruction\": \"a b. c d\"}\n{\"instruction\": \n",
            ":2: not valid JSON",
        ),
        (
            "utf8",
            b"{\"instruction\": \"a b. c d\"}\n\n{\"instruction\": \"\xc3\x28\"}\n",
            ":3: invalid UTF-8",
        ),
        (
            "empty",
            b"{\"instruction\": \"  \"}\n",
            ":1: empty instruction",
        ),
        (
            "dupe",
            b"{\"id\": \"x\", \"instruction\": \"a\"}\n{\"id\": \"x\", \"instruction\": \"b\"}\n",
            ":2: duplicate id \"x\" (first at line 1)",
        ),
        (
            "layout",
            b"{\"question\": \"a\"}\n",
            ":1: no `instruction` field",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = tmp.path().join(format!("{name}.jsonl"));
        std::fs::write(&path, bytes).unwrap();
        let out = bin()
            .args(["--offline", "--cache"])
            .arg(tmp.path().join("c.sqlite"))
            .arg("run")
            .arg(&path)
            .arg("-o")
            .arg(tmp.path().join(format!("run-{name}")))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{name}.jsonl{expected}")),
            "{name}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let big = tmp.path().join("big.jsonl");
    let huge = "w".repeat(1 << 20);
    std::fs::write(&big, format!("{{\"instruction\": \"{huge}\"}}\n")).unwrap();
    let out = bin()
        .args(["--offline", "run"])
        .arg(&big)
        .arg("-o")
        .arg(tmp.path().join("run-big"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("big.jsonl:1: instruction is 1048576 bytes"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn skip_bad_seeds_and_field_maps_read_what_can_be_read() {
    let server = scripted_server(Duration::ZERO).await;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mixed.jsonl");
    std::fs::write(
        &path,
        "{\"q\": \"Write a note. Make it short.\", \"a\": \"Note.\"}\nnot json\n{\"q\": \"\"}\n",
    )
    .unwrap();
    let run = tmp.path().join("run");
    ok(run_cmd(&server, &tmp.path().join("c.sqlite"), &["run"])
        .arg(&path)
        .args(["-o"])
        .arg(&run)
        .args([
            "--skip-bad-seeds",
            "--field",
            "instruction=q",
            "--field",
            "response=a",
        ])
        .output()
        .unwrap());
    let quarantine = lines(&run, "quarantine.jsonl");
    let read: Vec<_> = quarantine.iter().filter(|q| q["stage"] == "read").collect();
    assert_eq!(read.len(), 2);
    assert!(read[0]["unit"].as_str().unwrap().ends_with("mixed.jsonl:2"));
    let c = &manifest(&run)["counts"];
    assert_eq!(c["seeds_in"], 1);
    assert_eq!(c["seeds_unreadable"], 2);
    assert_eq!(c["seed_responses_given"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_merge_into_the_unsharded_run() {
    let server = scripted_server(Duration::ZERO).await;
    let tmp = tempfile::tempdir().unwrap();
    let seeds = write_seeds(tmp.path());
    let cache = tmp.path().join("cache.sqlite");
    let whole = tmp.path().join("whole");
    ok(run_cmd(&server, &cache, &["run"])
        .arg(&seeds)
        .arg("-o")
        .arg(&whole)
        .output()
        .unwrap());
    let mut parts = Vec::new();
    for i in 0..3 {
        let part = tmp.path().join(format!("part{i}"));
        ok(
            run_cmd(&server, &tmp.path().join(format!("c{i}.sqlite")), &["run"])
                .arg(&seeds)
                .arg("-o")
                .arg(&part)
                .args(["--shard", &format!("{i}/3")])
                .output()
                .unwrap(),
        );
        parts.push(part);
    }
    let ins: u64 = parts
        .iter()
        .map(|p| manifest(p)["counts"]["seeds_in"].as_u64().unwrap())
        .sum();
    assert_eq!(ins, 16, "the shards split the seeds");
    let merged = tmp.path().join("merged");
    ok(bin()
        .arg("merge")
        .args(&parts)
        .arg("-o")
        .arg(&merged)
        .output()
        .unwrap());
    assert_same_files(&whole, &merged);
    let out = bin()
        .arg("merge")
        .args(&parts)
        .arg("-o")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "merging into an existing run is refused"
    );
}

/// The scheduler variables `--shard auto` reads, removed so the tests see only their own.
const SHARD_ENV: [&str; 5] = [
    "JOB_COMPLETION_INDEX",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_STEP",
];

/// `demorecon run SEEDS -o RUN --shard auto …` with exactly the scheduler variables `env`.
fn auto_shard_run(
    server: &FaultServer,
    cache: &Path,
    seeds: &Path,
    run: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = run_cmd(server, cache, &["run"]);
    cmd.arg(seeds)
        .arg("-o")
        .arg(run)
        .args(["--shard", "auto"])
        .args(extra);
    for var in SHARD_ENV {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn shard_auto_under_kubernetes_and_slurm_merges_by_glob_to_the_unsharded_run() {
    let server = scripted_server(Duration::ZERO).await;
    let tmp = tempfile::tempdir().unwrap();
    let seeds = write_seeds(tmp.path());
    let whole = tmp.path().join("whole");
    ok(run_cmd(&server, &tmp.path().join("whole.sqlite"), &["run"])
        .arg(&seeds)
        .arg("-o")
        .arg(&whole)
        .output()
        .unwrap());

    // A Kubernetes Indexed Job of 3 completions: JOB_COMPLETION_INDEX 0..2, --shards 3; each
    // pod its own run folder and cache file.
    let k8s = tmp.path().join("k8s");
    for i in 0..3 {
        ok(auto_shard_run(
            &server,
            &k8s.join(format!("cache-{i}.sqlite")),
            &seeds,
            &k8s.join(format!("shard-{i}")),
            &["--shards", "3"],
            &[("JOB_COMPLETION_INDEX", &i.to_string())],
        ));
        let m = manifest(&k8s.join(format!("shard-{i}")));
        assert_eq!(m["shard"], format!("{i}/3"));
    }
    // A Slurm array --array=1-3: task ids from 1, so index = id - min.
    let slurm = tmp.path().join("slurm");
    for id in 1..=3 {
        ok(auto_shard_run(
            &server,
            &slurm.join(format!("cache-{id}.sqlite")),
            &seeds,
            &slurm.join(format!("shard-{id}")),
            &[],
            &[
                ("SLURM_ARRAY_TASK_ID", &id.to_string()),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
        ));
        let m = manifest(&slurm.join(format!("shard-{id}")));
        assert_eq!(m["shard"], format!("{}/3", id - 1));
        assert_eq!(
            m["counts"],
            manifest(&k8s.join(format!("shard-{}", id - 1)))["counts"],
            "the same shard whichever scheduler numbered it"
        );
    }
    // Merged by a glob the shell did not expand: the unsharded bytes.
    for dir in [&k8s, &slurm] {
        let merged = dir.join("all");
        let out = ok(bin()
            .arg("merge")
            .arg(dir.join("shard-*"))
            .arg("-o")
            .arg(&merged)
            .output()
            .unwrap());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("merged 3 run folders"), "{err}");
        assert_same_files(&whole, &merged);
    }

    // The per-pod caches merge into one that answers the whole run offline.
    let caches: Vec<PathBuf> = (0..3)
        .map(|i| k8s.join(format!("cache-{i}.sqlite")))
        .collect();
    let all = tmp.path().join("all.sqlite");
    for _ in 0..2 {
        let out = ok(bin()
            .args(["cache", "merge"])
            .args(&caches)
            .arg("-o")
            .arg(&all)
            .arg("--json")
            .output()
            .unwrap());
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["conflicts"], json!([]), "{report}");
    }
    let offline = tmp.path().join("offline");
    ok(bin()
        .args(["--offline", "--backend"])
        .arg(format!("scripted@{}", server.base_url()))
        .arg("--cache")
        .arg(&all)
        .arg("run")
        .arg(&seeds)
        .arg("-o")
        .arg(&offline)
        .output()
        .unwrap());
    assert_same_files(&whole, &offline);

    // Without a scheduler, or with values that do not fit, `auto` says what is wrong.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (&["--shards", "3"], &[], "neither JOB_COMPLETION_INDEX"),
        (
            &["--shards", "3"],
            &[("JOB_COMPLETION_INDEX", "3")],
            "JOB_COMPLETION_INDEX=3 is not below --shards 3",
        ),
        (&[], &[("JOB_COMPLETION_INDEX", "1")], "pass --shards N"),
        (
            &[],
            &[
                ("SLURM_ARRAY_TASK_ID", "x"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
            "SLURM_ARRAY_TASK_ID=\"x\" is not a non-negative whole number",
        ),
    ];
    for (i, (extra, env, expected)) in cases.into_iter().enumerate() {
        let out = auto_shard_run(
            &server,
            &tmp.path().join("bad.sqlite"),
            &seeds,
            &tmp.path().join(format!("bad-{i}")),
            extra,
            env,
        );
        assert!(!out.status.success(), "{expected}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_refuses_a_missing_or_duplicated_shard_by_name() {
    let server = scripted_server(Duration::ZERO).await;
    let tmp = tempfile::tempdir().unwrap();
    let seeds = write_seeds(tmp.path());
    let cache = tmp.path().join("cache.sqlite");
    let shard = |name: &str, spec: &str| {
        let dir = tmp.path().join(name);
        ok(run_cmd(&server, &cache, &["run"])
            .arg(&seeds)
            .arg("-o")
            .arg(&dir)
            .args(["--shard", spec])
            .output()
            .unwrap());
        dir
    };
    let (zero, one, one_again) = (shard("a0", "0/3"), shard("a1", "1/3"), shard("b1", "1/3"));
    let refused = |runs: &[&PathBuf], out: &str| {
        let out = bin()
            .arg("merge")
            .args(runs)
            .arg("-o")
            .arg(tmp.path().join(out))
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&[&zero, &one], "m1");
    assert!(err.contains("shard 2/3 missing"), "{err}");
    let err = refused(&[&zero, &one, &one_again], "m2");
    assert!(
        err.contains(&format!(
            "shard 1/3 is given twice: {} and {}",
            one.display(),
            one_again.display()
        )),
        "{err}"
    );
    assert!(!tmp.path().join("m1").exists() && !tmp.path().join("m2").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn real_wizardlm_seeds_read_in_both_layouts_and_run_through() {
    let path = demorecon_testkit::shared::shared_data().join("wizardlm/wizardlm_alpaca_200.jsonl");
    if !path.exists() {
        eprintln!("skipped: {} is not present", path.display());
        return;
    }
    let server = scripted_server(Duration::ZERO).await;
    let tmp = tempfile::tempdir().unwrap();
    // The same records as ShareGPT (the Evol-Instruct release layout).
    let records: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 200);
    let sharegpt: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({"idx": r["id"], "conversations": [
            {"from": "human", "value": r["instruction"]}, {"from": "gpt", "value": r["response"]}]})
        })
        .collect();
    let sg_path = tmp.path().join("sharegpt.json");
    std::fs::write(&sg_path, serde_json::to_string_pretty(&sharegpt).unwrap()).unwrap();
    let mut runs = Vec::new();
    for (name, file) in [("jsonl", &path), ("sharegpt", &sg_path)] {
        let run = tmp.path().join(name);
        ok(run_cmd(
            &server,
            &tmp.path().join(format!("{name}.sqlite")),
            &["run"],
        )
        .arg(file)
        .arg("-o")
        .arg(&run)
        .output()
        .unwrap());
        runs.push(run);
    }
    let c = &manifest(&runs[0])["counts"];
    assert_eq!(c["seeds_in"], 200);
    assert_eq!(
        c["seed_responses_given"].as_u64().unwrap()
            + c["seeds_filtered_out"].as_u64().unwrap()
            + c["seeds_quarantined"].as_u64().unwrap(),
        200
    );
    assert_eq!(
        std::fs::read(runs[0].join("datasets/dpo_fgiv_a.jsonl")).unwrap(),
        std::fs::read(runs[1].join("datasets/dpo_fgiv_a.jsonl")).unwrap(),
        "both layouts give the same data"
    );
}

/// The embedded model through the structured stages (filter, decompose, vary): every schema,
/// the span enum included, compiles for constrained decoding and parses strictly. Responses
/// and judging use the same machinery as `chat`, tested elsewhere; the whole pipeline on the
/// embedded model is the README's main command.
#[test]
fn embedded_model_filters_decomposes_and_varies_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let seeds = tmp.path().join("one.jsonl");
    std::fs::write(
        &seeds,
        "{\"id\": \"sms\", \"instruction\": \"Write a polite SMS to my neighbour asking her to keep her dog quiet at night. Use at most 40 words.\"}\n",
    )
    .unwrap();
    let run = tmp.path().join("run");
    let out = ok(bin()
        .arg("--cache")
        .arg(tmp.path().join("cache.sqlite"))
        .arg("vary")
        .arg(&run)
        .arg("--seeds")
        .arg(&seeds)
        .output()
        .unwrap());
    let c = manifest(&run)["counts"].clone();
    assert_eq!(c["seeds_in"], 1, "{}", String::from_utf8_lossy(&out.stderr));
    let filter = lines(&run, "filter.jsonl");
    assert_eq!(filter[0]["status"], "done", "{filter:?}");
    if filter[0]["keep"] == false {
        return; // The model may drop it; the schema and parsing worked.
    }
    let decomposition = &lines(&run, "decompositions.jsonl")[0];
    if decomposition["status"] == "quarantined" {
        assert_eq!(
            decomposition["kind"], "too_few_sub_instructions",
            "{decomposition}"
        );
        return;
    }
    let subs = decomposition["sub_instructions"].as_array().unwrap();
    assert!(subs.len() >= 2);
    let variants = lines(&run, "variants.jsonl");
    assert_eq!(variants.len(), subs.len());
    let seed_text = std::fs::read_to_string(&seeds).unwrap();
    for v in &variants {
        assert_eq!(v["status"], "done", "{v}");
        // `find` was chosen from spans of the seed, so the edit always applies.
        let find = v["find"].as_str().unwrap();
        assert!(seed_text.contains(find), "{find:?} is not in the seed");
        let prompt = v["prompt"].as_str().unwrap();
        if v["valid"] == true {
            assert!(prompt.contains(v["replace"].as_str().unwrap()), "{v}");
        } else {
            assert!(!v["reason"].as_str().unwrap().is_empty(), "{v}");
        }
    }
}

/// Every verifiable training pair of `run` holds up: its chosen response passes the variant's
/// constraint and the rejected (seed) response fails it, the sampling record agrees (the kept
/// draw is the first that passed), and the manifest's yield counts the same pairs. Returns
/// how many verifiable pairs there were.
fn check_verifiable_pairs(run: &Path) -> usize {
    use demorecon_judge::checkable::Check;
    let variants: BTreeMap<String, Value> = lines(run, "variants.jsonl")
        .into_iter()
        .map(|v| (v["variant_id"].as_str().unwrap().to_owned(), v))
        .collect();
    let mut pairs = 0;
    for (file, kind) in [
        ("datasets/dpo_fgiv_a.jsonl", "fgiv_a"),
        ("datasets/dpo_fgiv_r.jsonl", "fgiv_r"),
    ] {
        for row in lines(run, file) {
            let vid = row["variant_id"].as_str().unwrap();
            let Some(spec) = variants[vid].get("constraint") else {
                continue;
            };
            assert!(vid.contains("/c"), "{vid}: a verifiable variant is /c{{k}}");
            let check = Check::ifeval(spec["id"].as_str().unwrap(), &spec["kwargs"]).unwrap();
            let chosen = row["chosen"][0]["content"].as_str().unwrap();
            let rejected = row["rejected"][0]["content"].as_str().unwrap();
            assert!(check.check(chosen), "{vid} {kind}: chosen fails {spec}");
            assert!(
                !check.check(rejected),
                "{vid} {kind}: rejected passes {spec}"
            );
            pairs += 1;
        }
        for r in lines(run, "responses.jsonl")
            .iter()
            .filter(|r| r["kind"] == kind && r["status"] == "done")
        {
            let vid = r["variant_id"].as_str().unwrap();
            let samples = &r["samples"];
            if variants[vid].get("constraint").is_none() {
                assert!(samples.is_null(), "{vid}: a free variant is not sampled");
                continue;
            }
            let passed: Vec<bool> = samples["passed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_bool().unwrap())
                .collect();
            match samples["kept"].as_u64() {
                Some(i) => {
                    assert_eq!(
                        passed.len(),
                        i as usize + 1,
                        "{vid}: stops at the first pass"
                    );
                    assert!(passed[i as usize] && passed[..i as usize].iter().all(|p| !p));
                }
                None => assert!(passed.iter().all(|p| !p), "{vid}: {samples}"),
            }
        }
    }
    let y = &manifest(run)["verifiable_yield"]["all"];
    assert_eq!(
        y["fgiv_a"]["counts"]["pairs_valid"].as_u64().unwrap()
            + y["fgiv_r"]["counts"]["pairs_valid"].as_u64().unwrap(),
        pairs as u64,
        "{y}"
    );
    pairs
}

/// `--variant-kinds both` against the scripted model: each decomposed seed gets its free
/// variants (`/v{k}`) and as many verifiable ones (`/c{k}`), made by code without a call;
/// verifiable pairs are decided by their own check; FGIV-Eval keeps to free variants; counts
/// add up and the yield is reported per family.
#[tokio::test(flavor = "multi_thread")]
async fn verifiable_variants_beside_free_ones_with_checked_pairs() {
    let server = scripted_server(Duration::ZERO).await;
    let tmp = tempfile::tempdir().unwrap();
    let seeds = write_seeds(tmp.path());
    let run = tmp.path().join("run");
    let cache = tmp.path().join("cache.sqlite");
    let mut cmd = run_cmd(&server, &cache, &["run"]);
    cmd.arg(&seeds)
        .arg("-o")
        .arg(&run)
        .args(["--variant-kinds", "both", "--samples", "3"]);
    ok(cmd.output().unwrap());
    let m = manifest(&run);
    let c = &m["counts"];
    let variants = lines(&run, "variants.jsonl");
    let free = variants
        .iter()
        .filter(|v| v["variant_id"].as_str().unwrap().contains("/v"))
        .count();
    let verifiable: Vec<&Value> = variants
        .iter()
        .filter(|v| v["variant_id"].as_str().unwrap().contains("/c"))
        .collect();
    assert!(
        free > 0 && free == verifiable.len(),
        "{free} free, {} verifiable",
        verifiable.len()
    );
    assert_eq!(c["variants"].as_u64().unwrap() as usize, variants.len());
    for v in &verifiable {
        assert_eq!(v["status"], "done");
        assert!(
            v["calls"].as_array().unwrap().is_empty(),
            "made by code: {v}"
        );
        assert!(v["constraint"]["id"].is_string(), "{v}");
        assert!(["add", "contradict", "parallel"].contains(&v["edit_kind"].as_str().unwrap()));
    }
    // Verifiable variants are verified by code, with their own constraint's check.
    for d in lines(&run, "verdicts.jsonl") {
        if d["variant_id"].as_str().unwrap().contains("/c") {
            assert_eq!(d["method"], "code", "{d}");
        }
    }
    for row in lines(&run, "datasets/fgiv_eval.jsonl") {
        assert!(row["variant_id"].as_str().unwrap().contains("/v"), "{row}");
    }
    let pairs = check_verifiable_pairs(&run);
    assert!(
        pairs > 0,
        "the scripted answers pass some constraints (no commas, ...)"
    );
    let families = m["verifiable_yield"]["families"].as_object().unwrap();
    let made: u64 = families
        .values()
        .map(|f| f["variants"].as_u64().unwrap())
        .sum();
    assert_eq!(
        made as usize,
        verifiable.iter().filter(|v| v["valid"] == true).count()
    );
    // One draw per unsampled response; a verifiable response drew between 1 and 3.
    for f in families.values() {
        let a = &f["fgiv_a"]["counts"];
        let (responses, samples) = (
            a["responses"].as_u64().unwrap(),
            a["samples"].as_u64().unwrap(),
        );
        assert!(samples >= responses && samples <= 3 * responses, "{f}");
    }
}

/// Rejection sampling on the real embedded model (the generator scripted, so the seeds
/// decompose predictably): every verifiable pair is checked, and because each draw has its
/// own seed a second run with an empty cache makes the same bytes.
#[tokio::test(flavor = "multi_thread")]
async fn rejection_sampling_on_the_embedded_model_is_checked_and_reproducible() {
    let server = scripted_server(Duration::ZERO).await;
    let tmp = tempfile::tempdir().unwrap();
    let seeds = tmp.path().join("seeds.jsonl");
    std::fs::write(
        &seeds,
        "{\"id\": \"b\", \"instruction\": \"Describe a harbour at dawn. Keep it short. Use plain words.\"}\n",
    )
    .unwrap();
    let mut runs = Vec::new();
    for i in 0..2 {
        let run = tmp.path().join(format!("run{i}"));
        let mut cmd = run_cmd(&server, &tmp.path().join(format!("cache{i}.sqlite")), &[]);
        cmd.args(["--responder", "embedded", "run"])
            .arg(&seeds)
            .arg("-o")
            .arg(&run)
            .args([
                "--variant-kinds",
                "verifiable",
                "--samples",
                "3",
                "--response-max-tokens",
                "32",
            ]);
        ok(cmd.output().unwrap());
        runs.push(run);
    }
    let y = &manifest(&runs[0])["verifiable_yield"]["all"];
    assert_eq!(y["variants"], 3, "one per sub-instruction: {y}");
    assert!(
        y["fgiv_a"]["counts"]["samples"].as_u64().unwrap() >= 3,
        "{y}"
    );
    check_verifiable_pairs(&runs[0]);
    assert_same_files(&runs[0], &runs[1]);
}
