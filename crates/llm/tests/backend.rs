//! The HTTP backend, cache and ledger against real loopback servers (the fault-injecting
//! `FaultServer`); `demorecon serve` with the real model is exercised in the CLI's tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use demorecon_llm::cache::{CacheMode, CachedModel, CallCache, request_key};
use demorecon_llm::ledger::{Ledger, MeteredModel, Price, PriceTable};
use demorecon_llm::openai::{EndpointConfig, OpenAiChat};
use demorecon_llm::{ChatModel, ChatRequest, LlmError, Message, ResponseFormat};
use demorecon_testkit::{Fault, FaultServer, echo_reply};
use serde_json::json;

fn endpoint(urls: Vec<String>) -> EndpointConfig {
    EndpointConfig {
        base_urls: urls,
        model: "test-model".into(),
        backoff_base_ms: 20,
        backoff_max_ms: 200,
        timeout_s: 5.0,
        ..Default::default()
    }
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest::new(vec![Message::user(text)])
}

/// A request for JSON matching `{"type": "object"}`.
fn ask_for_schema() -> ChatRequest {
    let mut req = ask("give json");
    req.response_format = ResponseFormat::JsonSchema {
        name: "a".into(),
        schema: json!({"type": "object"}),
    };
    req
}

/// Sends `n` distinct requests at once and waits for all of them to succeed.
async fn ask_concurrently(chat: OpenAiChat, n: usize) {
    let chat = Arc::new(chat);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let chat = chat.clone();
            tokio::spawn(async move { chat.chat(&ask(&i.to_string()), None).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn retries_5xx_malformed_and_truncated_bodies() {
    let server = FaultServer::start(vec![
        Fault::Status(500),
        Fault::Status(503),
        Fault::Malformed,
        Fault::Truncated,
    ])
    .await;
    let chat = OpenAiChat::new(endpoint(vec![server.base_url()])).unwrap();
    let resp = chat.chat(&ask("hello"), None).await.unwrap();
    assert_eq!(resp.text, "echo: hello");
    assert_eq!(server.requests(), 5);
    assert!(resp.usage.prompt_tokens > 0 && resp.usage.completion_tokens == 2);
}

#[tokio::test]
async fn gives_up_after_max_retries_and_does_not_retry_client_errors() {
    let server = FaultServer::start_with(vec![], |_, _| Fault::Status(502)).await;
    let cfg = EndpointConfig {
        max_retries: 2,
        ..endpoint(vec![server.base_url()])
    };
    let err = OpenAiChat::new(cfg)
        .unwrap()
        .chat(&ask("x"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Http { status: 502, .. }), "{err}");
    assert_eq!(server.requests(), 3);

    let server = FaultServer::start(vec![Fault::Status(401)]).await;
    let chat = OpenAiChat::new(endpoint(vec![server.base_url()])).unwrap();
    let err = chat.chat(&ask("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::Http { status: 401, .. }), "{err}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn stalled_requests_time_out_and_retry() {
    let stall = Fault::Stall(
        Duration::from_secs(3),
        Box::new(Fault::Reply("too late".into())),
    );
    let server = FaultServer::start(vec![stall]).await;
    let cfg = EndpointConfig {
        timeout_s: 0.3,
        ..endpoint(vec![server.base_url()])
    };
    let started = Instant::now();
    let resp = OpenAiChat::new(cfg)
        .unwrap()
        .chat(&ask("late"), None)
        .await
        .unwrap();
    assert_eq!(resp.text, "echo: late");
    assert_eq!(server.requests(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_429_cools_the_whole_endpoint_down() {
    let server = FaultServer::start(vec![Fault::RateLimit { retry_after_s: 0.8 }]).await;
    let chat = Arc::new(OpenAiChat::new(endpoint(vec![server.base_url()])).unwrap());
    let first = {
        let chat = chat.clone();
        tokio::spawn(async move { chat.chat(&ask("first"), None).await })
    };
    // Let the 429 land, then start more requests while the endpoint is cooling down.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let later: Vec<_> = (0..3)
        .map(|i| {
            let chat = chat.clone();
            tokio::spawn(async move { chat.chat(&ask(&format!("later {i}")), None).await })
        })
        .collect();
    assert_eq!(first.await.unwrap().unwrap().text, "echo: first");
    for task in later {
        task.await.unwrap().unwrap();
    }
    let times = server.arrival_times();
    assert_eq!(times.len(), 5);
    let limited_at = times[0];
    for t in &times[1..] {
        assert!(
            *t >= limited_at + 0.75,
            "request at {t:.3}s arrived during the cool-down from {limited_at:.3}s"
        );
    }
}

#[tokio::test]
async fn concurrency_per_endpoint_is_bounded() {
    let server = FaultServer::start_with(vec![], |b, _| {
        Fault::Stall(
            Duration::from_millis(80),
            Box::new(Fault::Reply(echo_reply(b))),
        )
    })
    .await;
    let cfg = EndpointConfig {
        max_concurrency: 3,
        ..endpoint(vec![server.base_url()])
    };
    ask_concurrently(OpenAiChat::new(cfg).unwrap(), 12).await;
    assert_eq!(server.peak_in_flight(), 3);
}

#[tokio::test]
async fn requests_per_minute_are_spread_out() {
    let server = FaultServer::start(vec![]).await;
    let cfg = EndpointConfig {
        rpm: Some(60),
        max_concurrency: 64,
        ..endpoint(vec![server.base_url()])
    };
    ask_concurrently(OpenAiChat::new(cfg).unwrap(), 62).await;
    let mut times = server.arrival_times();
    times.sort_by(f64::total_cmp);
    // A full minute's burst goes at once; the next two wait for the bucket (1 per second).
    assert!(times[59] < 1.5, "burst was held back: {}", times[59]);
    assert!(times[61] >= 1.8, "rpm not enforced: last at {}", times[61]);
}

#[tokio::test]
async fn a_failing_replica_is_routed_around() {
    let bad = FaultServer::start_with(vec![], |_, _| Fault::Status(500)).await;
    let good = FaultServer::start(vec![]).await;
    let chat = OpenAiChat::new(endpoint(vec![bad.base_url(), good.base_url()])).unwrap();
    for i in 0..20 {
        chat.chat(&ask(&i.to_string()), None).await.unwrap();
    }
    assert_eq!(good.requests(), 20);
    assert!(
        bad.requests() <= 6,
        "the failing replica kept getting traffic: {}",
        bad.requests()
    );
}

#[tokio::test]
async fn a_500_naming_response_format_degrades_it_without_retrying() {
    let server = FaultServer::start_with(vec![], |_, _| Fault::RejectJsonSchemaWith500).await;
    let chat = OpenAiChat::new(endpoint(vec![server.base_url()])).unwrap();
    let req = ask_for_schema();
    chat.chat(&req, None).await.unwrap();
    let log = server.log();
    assert_eq!(log.len(), 2, "one refusal, then json_object: {log:?}");
    assert_eq!(log[0].body["response_format"]["type"], "json_schema");
    // The schema travels inside json_object, where llama-cpp-python enforces it.
    assert_eq!(
        log[1].body["response_format"],
        json!({"type": "json_object", "schema": {"type": "object"}})
    );
}

#[tokio::test]
async fn concurrent_refusals_of_one_format_step_down_once() {
    let server = FaultServer::start_with(vec![], |_, _| Fault::RejectJsonSchemaWith500).await;
    let chat = OpenAiChat::new(endpoint(vec![server.base_url()])).unwrap();
    let req = ask_for_schema();
    let calls = (0..4).map(|_| chat.chat(&req, None));
    for answer in futures::future::join_all(calls).await {
        answer.unwrap();
    }
    for r in server.log() {
        let format = &r.body["response_format"];
        assert!(
            format["type"] == "json_schema" || format["schema"] == json!({"type": "object"}),
            "stepped past json_object with the schema: {format}"
        );
    }
}

#[tokio::test]
async fn response_format_degrades_when_refused() {
    let server = FaultServer::start_with(vec![], |b, _| {
        if b.get("response_format").is_some() {
            Fault::RefuseResponseFormat
        } else {
            Fault::Reply("{\"a\": 1}".into())
        }
    })
    .await;
    let chat = OpenAiChat::new(endpoint(vec![server.base_url()])).unwrap();
    let req = ask_for_schema();
    assert_eq!(chat.chat(&req, None).await.unwrap().text, "{\"a\": 1}");
    let log = server.log();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0].body["response_format"]["type"], "json_schema");
    assert_eq!(
        log[1].body["response_format"]["schema"],
        json!({"type": "object"})
    );
    assert_eq!(
        log[2].body["response_format"],
        json!({"type": "json_object"})
    );
    assert!(log[3].body.get("response_format").is_none());
    assert!(
        log[3].body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("JSON schema")
    );
    // The endpoint remembers: the next structured request goes straight to prompt-only.
    chat.chat(&req, None).await.unwrap();
    assert_eq!(server.requests(), 5);
}

#[tokio::test]
async fn streams_deltas_over_sse() {
    let server = FaultServer::start(vec![]).await;
    let chat = OpenAiChat::new(endpoint(vec![server.base_url()])).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let resp = chat.chat(&ask("one two three"), Some(tx)).await.unwrap();
    let mut pieces = Vec::new();
    while let Ok(p) = rx.try_recv() {
        pieces.push(p);
    }
    assert!(pieces.len() > 1);
    assert_eq!(pieces.concat(), resp.text);
    assert_eq!(resp.text, "echo: one two three");
    assert!(resp.usage.completion_tokens > 0);
}

#[tokio::test]
async fn api_key_is_sent_but_never_stored() {
    let planted = "sk-planted-0123456789-secret";
    // SAFETY: set before any thread reads the environment for this variable; only this test uses it.
    unsafe { std::env::set_var("DEMORECON_TEST_KEY_PLANTED", planted) };
    let server = FaultServer::start(vec![]).await;
    let cfg = EndpointConfig {
        api_key_env: Some("DEMORECON_TEST_KEY_PLANTED".into()),
        ..endpoint(vec![server.base_url()])
    };
    let dir = tempfile::tempdir().unwrap();
    let cache =
        Arc::new(CallCache::open(&dir.path().join("cache.sqlite"), CacheMode::ReadWrite).unwrap());
    let chat = OpenAiChat::new(cfg).unwrap();
    assert!(!format!("{chat:?}").contains(planted));
    let model = CachedModel::new(Arc::new(chat), cache.clone());
    model.chat(&ask("secret?"), None).await.unwrap();
    let expected = format!("Bearer {planted}");
    assert_eq!(
        server.log()[0].authorization.as_deref(),
        Some(expected.as_str())
    );
    drop(model);
    drop(cache);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes
                .windows(planted.len())
                .any(|w| w == planted.as_bytes())
        );
    }
}

#[tokio::test]
async fn cache_hits_skip_the_backend_and_offline_names_the_hash() {
    let server = FaultServer::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sqlite");
    let backend: Arc<dyn ChatModel> =
        Arc::new(OpenAiChat::new(endpoint(vec![server.base_url()])).unwrap());
    let cache = Arc::new(CallCache::open(&path, CacheMode::ReadWrite).unwrap());
    let model = CachedModel::new(backend.clone(), cache.clone());
    let a = model.chat(&ask("same"), None).await.unwrap();
    let b = model.chat(&ask("same"), None).await.unwrap();
    assert_eq!((a.cached, b.cached), (false, true));
    assert_eq!(a.text, b.text);
    assert_eq!(server.requests(), 1);
    assert_eq!((cache.counts().hits, cache.counts().misses), (1, 1));

    let offline_cache = Arc::new(CallCache::open(&path, CacheMode::Offline).unwrap());
    let offline = CachedModel::new(backend.clone(), offline_cache);
    assert_eq!(
        offline.chat(&ask("same"), None).await.unwrap().text,
        "echo: same"
    );
    let err = offline.chat(&ask("new"), None).await.unwrap_err();
    let want = request_key(&backend.identity(), &ask("new"));
    assert!(
        matches!(&err, LlmError::OfflineMiss { hash } if *hash == want),
        "{err}"
    );
    assert!(err.to_string().contains(&want));
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn budget_stops_before_it_is_passed_and_a_rerun_continues() {
    let server = FaultServer::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sqlite");
    let prices = PriceTable(
        [(
            "test-model".to_owned(),
            Price {
                input: 1000.0,
                output: 1000.0,
            },
        )]
        .into(),
    );
    // Each call reserves (prompt estimate + 10 max tokens) at $0.001 a token, about $0.013,
    // and spends about $0.003 (the echo server reports ~3 tokens).
    let run = |budget: f64| {
        let backend: Arc<dyn ChatModel> =
            Arc::new(OpenAiChat::new(endpoint(vec![server.base_url()])).unwrap());
        let ledger = Arc::new(Ledger::new(prices.clone(), Some(budget)));
        let metered: Arc<dyn ChatModel> =
            Arc::new(MeteredModel::new(backend, "judge", ledger.clone()));
        let cache = Arc::new(CallCache::open(&path, CacheMode::ReadWrite).unwrap());
        (CachedModel::new(metered, cache), ledger)
    };
    let req = |i: usize| {
        let mut r = ask(&format!("q{i}"));
        r.sampling.max_tokens = 10;
        r
    };
    let (model, ledger) = run(0.02);
    let mut done = 0;
    let mut stopped = None;
    for i in 0..10 {
        match model.chat(&req(i), None).await {
            Ok(_) => done += 1,
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(stopped, Some(LlmError::BudgetExceeded { .. })),
        "{stopped:?}"
    );
    let spent = ledger.snapshot().total_cost_usd;
    assert!(spent <= 0.02 && done >= 2, "spent {spent} in {done} calls");
    assert_eq!(
        ledger.snapshot().by_role["judge"]["test-model"].calls,
        done as u64
    );

    // Rerun with more budget: the first `done` calls are cache hits and cost nothing.
    let (model, ledger) = run(1.0);
    for i in 0..10 {
        model.chat(&req(i), None).await.unwrap();
    }
    assert_eq!(server.requests(), 10);
    assert_eq!(
        ledger.snapshot().by_role["judge"]["test-model"].calls,
        10 - done as u64
    );
}

/// Child half of `two_processes_share_one_cache`: writes and reads rows in a loop.
#[test]
#[ignore = "run as a child process by two_processes_share_one_cache"]
fn cache_writer_child() {
    let Ok(path) = std::env::var("DEMORECON_CACHE_CHILD") else {
        return;
    };
    let who = std::env::var("DEMORECON_CACHE_CHILD_ID").unwrap();
    let cache = CallCache::open(std::path::Path::new(&path), CacheMode::ReadWrite).unwrap();
    let id = demorecon_llm::BackendIdentity {
        kind: "test".into(),
        model: "m".into(),
        detail: String::new(),
    };
    for i in 0..300 {
        let req = ask(&format!("{who}-{i}"));
        let key = request_key(&id, &req);
        let resp = demorecon_llm::ChatResponse {
            text: format!("answer {who} {i}"),
            finish_reason: demorecon_llm::FinishReason::Stop,
            usage: Default::default(),
            model: "m".into(),
            cached: false,
        };
        cache.put(&key, &id, &req, &resp).unwrap();
        assert_eq!(cache.get(&key).unwrap().unwrap().text, resp.text);
    }
}

#[test]
fn two_processes_share_one_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.sqlite");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|who| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "cache_writer_child",
                    "--ignored",
                    "--test-threads=1",
                ])
                .env("DEMORECON_CACHE_CHILD", &path)
                .env("DEMORECON_CACHE_CHILD_ID", who)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        assert!(stdout.contains("1 passed"), "{stdout}");
    }
    let cache = CallCache::open(&path, CacheMode::ReadWrite).unwrap();
    assert_eq!(cache.len().unwrap(), 600);
}
