//! Speed of the embedded engine, printed as JSON lines; `scripts/bench-embedded.sh` runs it
//! next to llama-cpp-python on the same GGUF.
//!
//! - `single`: one sequence straight on the llama.cpp backend — prefill in the scheduler's
//!   canonical chunks, then greedy decode — medians over `--runs`.
//! - `aggregate`: N concurrent requests through [`ChatModel`] (continuous batching), for each
//!   N in `--concurrency`; completion tokens per second of wall time.
//!
//! Usage: `bench_embedded [--model FILE.gguf] [--mode single|aggregate|both]
//!         [--decode-tokens N] [--runs N] [--threads N] [--concurrency 1,4,8,16,32]
//!         [--print-prompt] [--print-model-path]`

use demorecon_embedded::backend::{Backend, Row};
use demorecon_embedded::llama::{ContextSize, LlamaEngine, load_model};
use demorecon_embedded::sampler::argmax;
use demorecon_embedded::scheduler::PREFILL_CHUNK;
use demorecon_embedded::{EmbeddedChat, LoadOptions};
use demorecon_llm::{ChatModel, ChatRequest, Message, Sampling};
use std::time::Instant;

/// The fixed prompt; the llama.cpp side of the benchmark uses the same text.
const PROMPT: &str = "Write a short story about a lighthouse keeper who discovers that the light \
    has been sending messages to ships in a code nobody remembers. Describe the keeper, the \
    island, the weather during the long winter, and the night the first ship answers back. Keep \
    the tone quiet and a little melancholy, and end with the keeper deciding what to do next.";

struct Args {
    model: Option<std::path::PathBuf>,
    mode: String,
    decode_tokens: usize,
    runs: usize,
    /// A fixed thread count, or `None` (`auto`): single-stream runs on every core, aggregate
    /// runs let the engine choose per call.
    threads: Option<usize>,
    concurrency: Vec<usize>,
    print_prompt: bool,
    print_model_path: bool,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        model: None,
        mode: "both".into(),
        decode_tokens: 128,
        runs: 5,
        threads: None,
        concurrency: vec![1, 4, 8, 16, 32],
        print_prompt: false,
        print_model_path: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--model" => a.model = Some(value()?.into()),
            "--mode" => a.mode = value()?,
            "--decode-tokens" => a.decode_tokens = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            "--threads" => {
                let v = value()?;
                a.threads = if v == "auto" { None } else { Some(v.parse()?) };
            }
            "--concurrency" => {
                a.concurrency = value()?
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--print-prompt" => a.print_prompt = true,
            "--print-model-path" => a.print_model_path = true,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Peak resident memory of this process, from /proc (Linux); 0 elsewhere.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let model_path = match &args.model {
        Some(path) => path.clone(),
        None => demorecon_embedded::ensure_model(&demorecon_llm::home::data_home())?,
    };
    if args.print_model_path {
        println!("{}", model_path.display());
        return Ok(());
    }
    let request = ChatRequest::new(vec![Message::user(PROMPT)]);
    if args.print_prompt {
        let chat = EmbeddedChat::load(
            &model_path,
            &LoadOptions {
                max_batch: 1,
                ..LoadOptions::default()
            },
        )?;
        print!("{}", chat.render_prompt(&request)?);
        return Ok(());
    }
    if args.mode == "single" || args.mode == "both" {
        single(&args, &model_path, &request)?;
    }
    if args.mode == "aggregate" || args.mode == "both" {
        aggregate(&args, &model_path, &request)?;
    }
    Ok(())
}

fn single(args: &Args, model_path: &std::path::Path, request: &ChatRequest) -> anyhow::Result<()> {
    let prompt = EmbeddedChat::load(
        model_path,
        &LoadOptions {
            max_batch: 1,
            ..LoadOptions::default()
        },
    )?
    .prompt_tokens(request)?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let load_start = Instant::now();
    let model = load_model(model_path)?;
    let mut engine = LlamaEngine::new(
        &model,
        ContextSize {
            slots: 1,
            slot_context: 2048,
            max_tokens_per_call: PREFILL_CHUNK,
            threads,
            kv_f32: false,
        },
    )?;
    let load_s = load_start.elapsed().as_secs_f64();
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    let mut logits = Vec::new();
    let mut rows = vec![Vec::new()];
    for run in 0..=args.runs {
        engine.truncate(0, 0)?;
        let start = Instant::now();
        for (i, chunk) in prompt.chunks(PREFILL_CHUNK).enumerate() {
            let last = (i + 1) * PREFILL_CHUNK >= prompt.len();
            engine.prefill(0, i * PREFILL_CHUNK, chunk, last.then_some(&mut logits))?;
        }
        let prefill_s = start.elapsed().as_secs_f64();
        let mut token = argmax(&logits).unwrap_or(0);
        let start = Instant::now();
        for step in 0..args.decode_tokens {
            let row = Row {
                slot: 0,
                pos: prompt.len() + step,
                token,
            };
            engine.decode(&[row], &mut rows)?;
            token = argmax(&rows[0]).unwrap_or(0);
        }
        let decode_s = start.elapsed().as_secs_f64();
        if run > 0 {
            // run 0 warms up
            prefill.push(prompt.len() as f64 / prefill_s);
            decode.push(args.decode_tokens as f64 / decode_s);
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "engine": "demorecon-embedded", "mode": "single", "threads": threads,
            "prompt_tokens": prompt.len(), "decode_tokens": args.decode_tokens, "runs": args.runs,
            "load_s": load_s,
            "prefill_tok_s": median(prefill.clone()), "decode_tok_s": median(decode.clone()),
            "prefill_tok_s_all": prefill, "decode_tok_s_all": decode,
            "peak_rss_mb": peak_rss_mb(),
        })
    );
    Ok(())
}

fn aggregate(
    args: &Args,
    model_path: &std::path::Path,
    request: &ChatRequest,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for &n in &args.concurrency {
        let chat = EmbeddedChat::load(
            model_path,
            &LoadOptions {
                max_batch: n.max(1),
                threads: args.threads,
                ..LoadOptions::default()
            },
        )?;
        // One request first so every run starts from the same warm prefix cache.
        let warm = ChatRequest {
            sampling: Sampling {
                max_tokens: 1,
                ..Sampling::default()
            },
            ..request.clone()
        };
        runtime.block_on(chat.chat(&warm, None))?;
        let before = chat.stats();
        let start = Instant::now();
        let answers = runtime.block_on(futures::future::join_all((0..n).map(|i| {
            let chat = chat.clone();
            let req = ChatRequest {
                sampling: Sampling {
                    temperature: 0.8,
                    seed: i as u64,
                    max_tokens: args.decode_tokens as u32,
                    ..Sampling::default()
                },
                ..request.clone()
            };
            async move { chat.chat(&req, None).await }
        })));
        let wall = start.elapsed().as_secs_f64();
        let tokens: u64 = answers
            .into_iter()
            .map(|a| a.map(|a| a.usage.completion_tokens))
            .sum::<Result<u64, _>>()?;
        let after = chat.stats();
        let steps = after.decode_steps - before.decode_steps;
        let rows = after.decode_rows - before.decode_rows;
        println!(
            "{}",
            serde_json::json!({
                "engine": "demorecon-embedded", "mode": "aggregate",
                "threads": args.threads.map_or_else(|| "auto".to_string(), |n| n.to_string()),
                "mean_threads": (after.engine_threads - before.engine_threads) as f64
                    / (after.engine_calls - before.engine_calls).max(1) as f64,
                "engine_share": (after.engine_micros - before.engine_micros) as f64 / 1e6 / wall,
                "concurrency": n, "completion_tokens": tokens, "wall_s": wall,
                "tok_s": tokens as f64 / wall,
                "mean_batch": if steps > 0 { rows as f64 / steps as f64 } else { 0.0 },
                "prompt_tokens_reused": after.prompt_tokens_reused - before.prompt_tokens_reused,
                "peak_rss_mb": peak_rss_mb(),
            })
        );
    }
    Ok(())
}
