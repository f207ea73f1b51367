//! The determinism contract under continuous batching: a request's text depends on the
//! request alone — not on what else is in the batch, the order requests arrive in, the
//! batch size limit, the context size, what the prefix cache holds, or how many threads the
//! engine ran each call on.

use super::model_path;
use demorecon_embedded::{EmbeddedChat, LoadOptions};
use demorecon_llm::{ChatModel, ChatRequest, Message, Sampling};
use std::collections::BTreeMap;

/// A system prompt long enough to span several prefill chunks, shared by every request, as
/// the pipeline's stages share theirs.
fn system_prompt() -> String {
    "You rewrite instructions. Follow these rules exactly, one at a time. ".repeat(12)
        + "Examples:\nInput: Write a poem about rain.\nOutput: Write a four-line poem about \
           rain that rhymes.\nInput: Describe a cat.\nOutput: Describe a cat in two sentences \
           without using the letter e.\n"
}

/// 16 requests: the same system prompt, different questions; half greedy, half sampled.
fn requests() -> Vec<ChatRequest> {
    let topics = [
        "the sea",
        "a forest",
        "coffee",
        "trains",
        "winter",
        "a library",
        "bees",
        "the moon",
        "bread",
        "rivers",
        "a violin",
        "chess",
        "salt",
        "clouds",
        "a lighthouse",
        "maps",
    ];
    topics
        .iter()
        .enumerate()
        .map(|(i, topic)| ChatRequest {
            sampling: Sampling {
                temperature: if i % 2 == 0 { 0.0 } else { 0.8 },
                top_p: 0.95,
                max_tokens: 20 + (i as u32 % 3) * 6,
                seed: 100 + i as u64,
                ..Sampling::default()
            },
            ..ChatRequest::new(vec![
                Message::system(system_prompt()),
                Message::user(format!("Input: Write about {topic}.")),
            ])
        })
        .collect()
}

/// Sends `order`'s requests to `chat` all at once; returns text by request index and checks
/// that each stream concatenates to its text.
async fn together(
    chat: &EmbeddedChat,
    reqs: &[ChatRequest],
    order: &[usize],
) -> BTreeMap<usize, String> {
    let calls = order.iter().map(|&i| {
        let chat = chat.clone();
        let req = reqs[i].clone();
        async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let answer = chat.chat(&req, Some(tx)).await.unwrap();
            let mut streamed = String::new();
            while let Some(delta) = rx.recv().await {
                streamed.push_str(&delta);
            }
            assert_eq!(streamed, answer.text, "request {i}'s stream");
            (i, answer.text)
        }
    });
    futures::future::join_all(calls).await.into_iter().collect()
}

/// `threads`: a fixed count, or `None` for the engine's own choice per call.
fn load(
    max_batch: usize,
    prefix_slots: usize,
    max_context: usize,
    threads: Option<usize>,
) -> EmbeddedChat {
    EmbeddedChat::load(
        &model_path(),
        &LoadOptions {
            max_batch,
            prefix_slots,
            max_context: Some(max_context),
            threads,
        },
    )
    .expect("load")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_requests_give_the_same_bytes_alone_together_reordered_and_from_the_prefix_cache() {
    let reqs = requests();
    let (reference, prompt_len) = {
        let alone = load(1, 0, 1024, Some(1));
        let n = alone.prompt_tokens(&reqs[0]).unwrap().len();
        assert!(
            n > 2 * 64,
            "the shared prompt should span chunks: {n} tokens"
        );
        // Reference: one request at a time, no prefix cache, one thread.
        let mut reference = BTreeMap::new();
        for (i, req) in reqs.iter().enumerate() {
            reference.insert(i, alone.chat(req, None).await.unwrap().text);
        }
        let stats = alone.stats();
        assert_eq!(stats.prompt_tokens_reused, 0);
        assert_eq!(
            stats.decode_rows, stats.decode_steps,
            "alone means batches of one"
        );
        (reference, n)
    };
    let reference = &reference;
    let distinct: std::collections::BTreeSet<&String> = reference.values().collect();
    assert!(
        distinct.len() > 8,
        "the requests should differ: {reference:?}"
    );

    // All 16 at once, in order, with the prefix cache, on two threads.
    let batched = load(16, 4, 1024, Some(2));
    let forward: Vec<usize> = (0..16).collect();
    assert_eq!(
        &together(&batched, &reqs, &forward).await,
        reference,
        "batched, 2 threads"
    );
    let stats = batched.stats();
    assert!(
        stats.decode_rows >= 4 * stats.decode_steps,
        "requests should have decoded together: {stats:?}"
    );
    assert!(
        stats.prompt_tokens_reused >= 64 * 10,
        "the shared prefix should have been reused: {stats:?} (prompt {prompt_len} tokens)"
    );

    // Again in reverse order, now from a warm prefix cache.
    let reverse: Vec<usize> = (0..16).rev().collect();
    assert_eq!(
        &together(&batched, &reqs, &reverse).await,
        reference,
        "reversed, warm cache"
    );
    let warm = batched.stats();
    assert!(warm.prompt_tokens_reused > stats.prompt_tokens_reused);

    // A smaller batch limit (so batches of 5, then fewer), a shuffled order, a larger
    // context per sequence, and threads chosen per call by the engine.
    let small = load(5, 1, 2048, None);
    let shuffled = [7, 2, 12, 0, 15, 9, 4, 11, 1, 14, 6, 3, 13, 8, 10, 5];
    assert_eq!(
        &together(&small, &reqs, &shuffled).await,
        reference,
        "batch of 5, shuffled, threads chosen per call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_alone_equals_itself_among_unrelated_long_requests() {
    // Other sequences with long, unrelated prompts and long outputs push the batch's KV range
    // past 512 cells while the probe decodes.
    let chat = load(8, 2, 2048, None);
    let probe = ChatRequest {
        sampling: Sampling {
            temperature: 0.7,
            seed: 5,
            max_tokens: 40,
            ..Sampling::default()
        },
        ..ChatRequest::new(vec![Message::user("Name three colours and one fruit.")])
    };
    let alone = chat.chat(&probe, None).await.unwrap().text;
    let long = "Summarise the following notes in detail. ".repeat(60);
    let mut reqs = vec![probe.clone()];
    for seed in 0..5 {
        reqs.push(ChatRequest {
            sampling: Sampling {
                temperature: 0.9,
                seed,
                max_tokens: 60,
                ..Sampling::default()
            },
            ..ChatRequest::new(vec![Message::user(format!("{long} ({seed})"))])
        });
    }
    let order: Vec<usize> = (1..reqs.len()).chain([0]).collect();
    let texts = together(&chat, &reqs, &order).await;
    assert_eq!(texts[&0], alone);
}
