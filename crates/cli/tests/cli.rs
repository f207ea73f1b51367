//! End-to-end tests of the `demorecon` binary: `serve` on loopback with the real embedded
//! model, our HTTP backend against it, `chat` with the cache (hit, miss, offline), bad input,
//! auth, the queue, graceful shutdown, and secrets kept out of logs and the cache.
//!
//! Every test gets its own `DEMORECON_HOME`-independent cache file; the embedded model itself
//! comes from the shared model store (`demorecon model fetch`, which `.ci/run` does first).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use demorecon_llm::openai::{EndpointConfig, OpenAiChat};
use demorecon_llm::{ChatModel, ChatRequest, Message, ResponseFormat};
use demorecon_testkit::shared::{read_jsonl, shared_data};
use serde_json::{Value, json};

#[path = "cli/batch.rs"]
mod batch;
#[path = "cli/eval.rs"]
mod eval;
#[path = "cli/export.rs"]
mod export;
#[path = "cli/pipeline.rs"]
mod pipeline;
#[path = "cli/reproduce.rs"]
mod reproduce;
#[path = "cli/train.rs"]
mod train;

/// Asserts that a finished command succeeded, showing its stderr when it did not.
fn ok(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "status {:?}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_demorecon"));
    cmd.env_remove("DEMORECON_CONFIG")
        .env_remove("DEMORECON_BACKEND")
        .env_remove("DEMORECON_TARGET");
    cmd
}

/// A running `demorecon serve`, killed on drop.
struct Server {
    child: Child,
    base_url: String,
    stderr_lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(cache: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = bin();
        cmd.args(["--cache"])
            .arg(cache)
            .args(["serve", "--port", "0"])
            .args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("http://").nth(1) {
                    let _ = tx.send(format!(
                        "http://{}",
                        rest.split_whitespace().next().unwrap_or("")
                    ));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let base_url = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("serve did not start: {:?}", lines.lock().unwrap()));
        Server {
            child,
            base_url,
            stderr_lines: lines,
        }
    }

    fn stderr(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain libc call on a pid we own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

fn model_name(base: &str) -> String {
    let v: Value = reqwest::blocking_get_json(&format!("{base}/models"));
    v["data"][0]["id"].as_str().unwrap().to_owned()
}

mod reqwest {
    pub use ::reqwest::*;

    /// A small synchronous GET for test set-up.
    pub fn blocking_get_json(url: &str) -> serde_json::Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { ::reqwest::get(url).await.unwrap().json().await.unwrap() })
    }
}

fn chat_req(text: &str, max_tokens: u32) -> ChatRequest {
    let mut r = ChatRequest::new(vec![Message::user(text)]);
    r.sampling.max_tokens = max_tokens;
    r
}

fn temp_cache() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite");
    (dir, path)
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_speaks_openai_to_our_backend_and_enforces_schemas() {
    let (_dir, cache) = temp_cache();
    let server = Server::start(&cache, &[], &[]);
    let name = tokio::task::spawn_blocking({
        let base = server.base_url.clone();
        move || model_name(&base)
    })
    .await
    .unwrap();
    let backend = OpenAiChat::new(EndpointConfig {
        base_urls: vec![server.base_url.clone()],
        model: name.clone(),
        timeout_s: 300.0,
        ..Default::default()
    })
    .unwrap();

    // Plain completion, greedy.
    let mut req = chat_req("What is the capital of France? Answer in one sentence.", 40);
    req.sampling.temperature = 0.0;
    let plain = backend.chat(&req, None).await.unwrap();
    assert!(plain.text.contains("Paris"), "{}", plain.text);
    assert!(plain.usage.prompt_tokens > 10 && plain.usage.completion_tokens > 0);

    // Streaming: the deltas add up to the same greedy text.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut streamed_req = req.clone();
    streamed_req.sampling.seed = 1; // a different key, so this one is generated, not cached
    let streamed = backend.chat(&streamed_req, Some(tx)).await.unwrap();
    let mut pieces = Vec::new();
    while let Ok(p) = rx.try_recv() {
        pieces.push(p);
    }
    assert!(pieces.len() > 1, "expected several deltas, got {pieces:?}");
    assert_eq!(pieces.concat(), streamed.text);
    assert_eq!(
        streamed.text, plain.text,
        "greedy decoding ignores the seed"
    );

    // response_format with a JSON schema: the answer parses and validates.
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "population_millions": {"type": "integer"},
            "kind": {"enum": ["capital", "town"]}
        },
        "required": ["city", "population_millions", "kind"],
        "additionalProperties": false
    });
    let mut structured = chat_req("Describe Paris as JSON.", 120);
    structured.response_format = ResponseFormat::JsonSchema {
        name: "city".into(),
        schema: schema.clone(),
    };
    let answer = backend.chat(&structured, None).await.unwrap();
    let value: Value =
        serde_json::from_str(&answer.text).unwrap_or_else(|e| panic!("{e}: {}", answer.text));
    assert!(jsonschema::is_valid(&schema, &value), "{value}");

    // The same request twice: a miss, then a hit (header from the server's cache).
    let body = json!({"model": name, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8});
    let url = format!("{}/chat/completions", server.base_url);
    let first = http().post(&url).json(&body).send().await.unwrap();
    assert_eq!(first.headers()["x-demorecon-cache"], "miss");
    let first: Value = first.json().await.unwrap();
    let second = http().post(&url).json(&body).send().await.unwrap();
    assert_eq!(second.headers()["x-demorecon-cache"], "hit");
    let second: Value = second.json().await.unwrap();
    assert_eq!(
        first["choices"][0]["message"],
        second["choices"][0]["message"]
    );
    assert_eq!(first["object"], "chat.completion");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_answers_bad_input_with_4xx_never_5xx() {
    let (_dir, cache) = temp_cache();
    let server = Server::start(&cache, &["--max-body-bytes", "4096"], &[]);
    let url = format!("{}/chat/completions", server.base_url);
    let client = http();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("invalid JSON", b"{\"messages\": [".to_vec(), 400),
        ("wrong shape", br#"{"messages": "hello"}"#.to_vec(), 400),
        ("unknown model", br#"{"model":"gpt-17","messages":[{"role":"user","content":"x"}]}"#.to_vec(), 404),
        ("huge body", format!(r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(10_000)).into_bytes(), 413),
        ("bad schema", br#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{}}}"#.to_vec(), 400),
        ("empty", Vec::new(), 400),
    ];
    for (what, body, status) in cases {
        let resp = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        if status != 413 {
            let v: Value = resp.json().await.unwrap();
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{what}: {v}"
            );
        }
    }
    let resp = client
        .get(format!("{}/nope", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    // Still healthy after all that.
    let health = client
        .get(server.base_url.replace("/v1", "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_requires_the_bearer_token_and_keeps_it_out_of_the_log() {
    let (_dir, cache) = temp_cache();
    let key = "sk-serve-planted-778899";
    let server = Server::start(
        &cache,
        &[],
        &[("DEMORECON_SERVE_API_KEY", key), ("DEMORECON_LOG", "info")],
    );
    let client = http();
    let models = format!("{}/models", server.base_url);
    assert_eq!(
        client.get(&models).send().await.unwrap().status().as_u16(),
        401
    );
    assert_eq!(
        client
            .get(&models)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let ok = client.get(&models).bearer_auth(key).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let body =
        json!({"messages": [{"role": "user", "content": "secret-body-text-42"}], "max_tokens": 4});
    let resp = client
        .post(format!("{}/chat/completions", server.base_url))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.stderr();
    assert!(
        log.contains("/v1/chat/completions") && log.contains("status=200"),
        "access log missing: {log}"
    );
    assert!(
        !log.contains(key) && !log.contains("secret-body-text-42"),
        "log leaked: {log}"
    );
    let bytes = std::fs::read(&cache).unwrap();
    assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_503_and_sigterm_finishes_in_flight_work() {
    let (_dir, cache) = temp_cache();
    let mut server = Server::start(&cache, &["--queue", "1"], &[]);
    let url = format!("{}/chat/completions", server.base_url);
    let long = json!({"messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        "max_tokens": 120, "temperature": 0});
    let slow = tokio::spawn({
        let (url, long) = (url.clone(), long.clone());
        async move { http().post(&url).json(&long).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let rejected = http().post(&url).json(&other).send().await.unwrap();
    assert_eq!(rejected.status().as_u16(), 503);
    assert!(rejected.headers().contains_key("retry-after"));
    // SIGTERM while the long request runs: it still completes, then the server exits cleanly.
    let status = tokio::task::spawn_blocking(move || {
        let status = server.sigterm();
        (status, server.stderr())
    });
    let done = slow.await.unwrap();
    assert_eq!(done.status().as_u16(), 200);
    let v: Value = done.json().await.unwrap();
    assert!(
        !v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let (status, log) = status.await.unwrap();
    assert!(status.success(), "exit {status:?}: {log}");
    assert!(log.contains("stopped"), "{log}");
}

/// The peak resident memory of a process, in MiB (Linux).
fn peak_rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        / 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_under_load_64_clients_single_flight_disconnects_and_sigterm_after_a_burst() {
    let (_dir, cache) = temp_cache();
    let mut server = Server::start(&cache, &["--queue", "64"], &[]);
    let url = format!("{}/chat/completions", server.base_url);
    // 64 clients at once: 32 send the same request, 32 each their own.
    let body = |i: usize| {
        let text = if i.is_multiple_of(2) {
            "Name a colour.".to_string()
        } else {
            format!("Name the number {i} in words.")
        };
        json!({"messages": [{"role": "user", "content": text}], "max_tokens": 4, "temperature": 0})
    };
    let clients = (0..64).map(|i| {
        let (url, body) = (url.clone(), body(i));
        tokio::spawn(async move {
            let resp = http().post(&url).json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            (
                i,
                status,
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .map(str::to_owned),
            )
        })
    });
    let answers: Vec<(usize, u16, Option<String>)> = futures::future::join_all(clients)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for (i, status, text) in &answers {
        assert_eq!(*status, 200, "client {i} got {status}");
        assert!(text.is_some(), "client {i}");
    }
    let same: Vec<&String> = answers
        .iter()
        .filter(|(i, ..)| i.is_multiple_of(2))
        .map(|(_, _, t)| t.as_ref().unwrap())
        .collect();
    assert!(same.iter().all(|t| *t == same[0]), "{same:?}");

    // A streaming client that hangs up: the server carries on serving others.
    let long = json!({"messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "max_tokens": 400, "temperature": 0, "stream": true});
    let mut resp = http().post(&url).json(&long).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let _first = resp.chunk().await.unwrap();
    drop(resp);

    // SIGTERM right after a burst: every admitted request still completes, then it exits.
    let burst: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let body = json!({"messages": [{"role": "user", "content": format!("Say {i}.")}],
                    "max_tokens": 6, "temperature": 0});
                http()
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peak = peak_rss_mib(server.child.id());
    let stopped = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.sigterm();
        (status, server.stderr())
    });
    for s in futures::future::join_all(burst).await {
        assert_eq!(s.unwrap(), 200);
    }
    let (status, log) = status.await.unwrap();
    assert!(status.success(), "exit {status:?}: {log}");
    assert!(stopped.elapsed() < Duration::from_secs(120), "{log}");
    // The 32 identical requests were computed once: 33 distinct requests and the burst of 8
    // reached the model (cache misses), and the stream too unless its client hung up before
    // the request got there; the stream was stopped either way, so 41 completed (metered).
    assert!(
        log.contains("41 misses") || log.contains("42 misses"),
        "{log}"
    );
    let calls: u64 = log
        .lines()
        .filter_map(|l| {
            l.split(" calls,")
                .next()?
                .rsplit(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(calls, 33 + 8, "{log}");
    assert!(peak < 2048, "peak RSS {peak} MiB");
}

fn chat_cmd(cache: &Path, args: &[&str]) -> std::process::Output {
    bin()
        .arg("--cache")
        .arg(cache)
        .arg("chat")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn chat_names_paris_then_hits_the_cache_and_works_offline() {
    let (_dir, cache) = temp_cache();
    let q = "What is the capital of France? Answer in one sentence.";
    let first = chat_cmd(&cache, &["--temperature", "0", q]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("Paris"), "{stdout}");
    assert!(String::from_utf8_lossy(&first.stderr).contains("cache miss"));

    let second = chat_cmd(&cache, &["--temperature", "0", q]);
    assert_eq!(String::from_utf8_lossy(&second.stdout), stdout);
    assert!(String::from_utf8_lossy(&second.stderr).contains("cache hit"));

    let offline = bin()
        .arg("--cache")
        .arg(&cache)
        .args(["--offline", "chat", "--temperature", "0", q])
        .output()
        .unwrap();
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&offline.stdout), stdout);

    let miss = bin()
        .arg("--cache")
        .arg(&cache)
        .args(["--offline", "chat", "A brand new question?"])
        .output()
        .unwrap();
    assert!(!miss.status.success());
    let err = String::from_utf8_lossy(&miss.stderr);
    assert!(
        err.contains("offline") && err.contains("cache has no answer for request"),
        "{err}"
    );
}

#[test]
fn chat_is_deterministic_per_seed() {
    let (_dir, cache) = temp_cache();
    let run = |seed: &str| {
        let out = bin()
            .arg("--cache")
            .arg(&cache)
            .args([
                "--no-cache",
                "chat",
                "--temperature",
                "0.9",
                "--max-tokens",
                "24",
                "--seed",
                seed,
            ])
            .arg("Tell me something about owls.")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let a = run("7");
    assert_eq!(a, run("7"));
    let others: Vec<String> = ["8", "9", "10"].iter().map(|s| run(s)).collect();
    assert!(
        others.iter().any(|o| *o != a),
        "three other seeds all gave the same text"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_keys_stay_out_of_logs_cache_and_json() {
    let server =
        demorecon_testkit::FaultServer::start(vec![demorecon_testkit::Fault::Status(500)]).await;
    let (_dir, cache) = temp_cache();
    let key = "sk-cli-planted-5566";
    let out = tokio::task::spawn_blocking({
        let (cache, url) = (cache.clone(), server.base_url());
        move || {
            bin()
                .env("MY_KEY", key)
                .env("DEMORECON_LOG", "trace")
                .arg("--cache")
                .arg(&cache)
                .args(["--api-key-env", "MY_KEY", "chat", "--json", "--model"])
                .arg(format!("m@{url}"))
                .arg("ping")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["text"], "echo: ping");
    assert_eq!(server.requests(), 2, "the 500 was retried once");
    assert_eq!(
        server.log()[1].authorization.as_deref(),
        Some(format!("Bearer {key}").as_str())
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("transient failure"),
        "trace log should show the retry: {stderr}"
    );
    assert!(!stderr.contains(key) && !String::from_utf8_lossy(&out.stdout).contains(key));
    let bytes = std::fs::read(&cache).unwrap();
    assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()));
}

#[test]
fn bad_configs_and_specs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("demorecon.toml");
    std::fs::write(
        &config,
        "[roles.judge]\nbackend = \"embedded\"\nrpm = \"fast\"\n",
    )
    .unwrap();
    let out = bin()
        .arg("--config")
        .arg(&config)
        .args(["chat", "hi"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("demorecon.toml") && err.contains("line 3"),
        "{err}"
    );

    let out = bin()
        .args(["--no-cache", "chat", "--model", "gpt-4o", "hi"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("MODEL@http"), "{err}");

    let out = bin()
        .args([
            "--no-cache",
            "chat",
            "--model",
            "embedded:/does/not/exist.gguf",
            "hi",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("exist.gguf"), "{err}");
}

#[test]
fn model_fetch_reports_the_verified_model() {
    let out = bin().args(["model", "fetch", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["sha256"],
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    assert_eq!(v["already_present"], true);
}

/// The IFEval "done" check through the binary: no network, no Python, the reference's files.
#[test]
fn eval_ifeval_reproduces_the_reference_outputs() {
    let data = shared_data().join("ifeval");
    let out = tempfile::tempdir().unwrap();
    let run = bin()
        .args(["eval", "ifeval", "--json", "--responses"])
        .arg(data.join("input_response_data_gpt4_20231107_145030.jsonl"))
        .arg("--input")
        .arg(data.join("input_data_gpt4_20231107_145030.jsonl"))
        .arg("-o")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    for (name, want) in [
        ("prompt_level_strict_acc", 0.770795),
        ("inst_level_strict_acc", 0.836930),
        ("prompt_level_loose_acc", 0.796673),
        ("inst_level_loose_acc", 0.856115),
    ] {
        let got = summary[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} missing: {summary}"));
        assert!((got - want).abs() < 5e-7, "{name}: {got} vs {want}");
    }
    for mode in ["strict", "loose"] {
        let file = format!("eval_results_{mode}.jsonl");
        let ours = read_jsonl(&out.path().join(&file));
        let reference = read_jsonl(&data.join("expected").join(&file));
        assert_eq!(ours.len(), 541);
        for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
            assert_eq!(a, b, "{mode} row {i} differs");
        }
    }
}
