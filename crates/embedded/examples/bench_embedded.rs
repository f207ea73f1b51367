//! Prefill and decode speed of the embedded model on a fixed prompt, printed as one JSON line.
//! `scripts/bench-embedded.sh` runs it next to llama.cpp.
//!
//! Usage: `bench_embedded [--model FILE.gguf] [--format f32|quantized|f16|q8_0]
//!         [--decode-tokens N] [--runs N] [--print-prompt] [--print-model-path]`

use demorecon_embedded::sampler::argmax;
use demorecon_embedded::{EmbeddedModel, LoadOptions, WeightFormat};
use demorecon_llm::{ChatRequest, Message};
use std::time::Instant;

/// The fixed prompt; the llama.cpp side of the benchmark uses the same text.
const PROMPT: &str = "Write a short story about a lighthouse keeper who discovers that the light \
    has been sending messages to ships in a code nobody remembers. Describe the keeper, the \
    island, the weather during the long winter, and the night the first ship answers back. Keep \
    the tone quiet and a little melancholy, and end with the keeper deciding what to do next.";

fn main() -> anyhow::Result<()> {
    let mut model_path = None;
    let mut format = WeightFormat::default();
    let mut decode_tokens = 128usize;
    let mut runs = 5usize;
    let mut print_prompt = false;
    let mut print_model_path = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--model" => model_path = Some(std::path::PathBuf::from(value()?)),
            "--format" => format = value()?.parse().map_err(anyhow::Error::msg)?,
            "--decode-tokens" => decode_tokens = value()?.parse()?,
            "--runs" => runs = value()?.parse()?,
            "--print-prompt" => print_prompt = true,
            "--print-model-path" => print_model_path = true,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let model_path = match model_path {
        Some(path) => path,
        None => demorecon_embedded::ensure_model(&demorecon_llm::home::data_home())?,
    };
    if print_model_path {
        println!("{}", model_path.display());
        return Ok(());
    }
    let load_start = Instant::now();
    let mut model = EmbeddedModel::load(
        &model_path,
        &LoadOptions {
            weight_format: format,
            max_context: None,
        },
    )?;
    let load_s = load_start.elapsed().as_secs_f64();
    let request = ChatRequest::new(vec![Message::user(PROMPT)]);
    if print_prompt {
        print!("{}", model.render_prompt(&request)?);
        return Ok(());
    }
    let prompt = model.prompt_tokens(&request)?;

    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    // One untimed warm-up run: first-touch page faults and lazily packed weights.
    for run in 0..=runs {
        let start = Instant::now();
        let mut logits = model.prefill(&prompt)?;
        let prefill_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..decode_tokens {
            let token = argmax(&logits).unwrap_or(0);
            logits = model.decode_step(token)?;
        }
        let decode_s = start.elapsed().as_secs_f64();
        if run > 0 {
            prefill.push(prompt.len() as f64 / prefill_s);
            decode.push(decode_tokens as f64 / decode_s);
        }
    }
    let report = serde_json::json!({
        "engine": "demorecon-embedded",
        "format": format!("{format:?}"),
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "prompt_tokens": prompt.len(),
        "decode_tokens": decode_tokens,
        "runs": runs,
        "load_s": load_s,
        "prefill_tok_s": median(&mut prefill),
        "decode_tok_s": median(&mut decode),
        "prefill_tok_s_all": prefill,
        "decode_tok_s_all": decode,
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{report}");
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Peak resident set size (VmHWM) in MiB, on Linux.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
