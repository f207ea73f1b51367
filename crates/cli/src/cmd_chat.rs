//! `demorecon chat "…"`: one prompt to any backend, streamed to the terminal — a human's
//! smoke test of a role's configuration.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use demorecon_llm::{ChatRequest, Message, ResponseFormat, Sampling};

use crate::context::{Context, RoleName};

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// The user message.
    pub prompt: String,
    /// A system message to put first.
    #[arg(long)]
    pub system: Option<String>,
    /// Backend for this chat (overrides --target): `embedded`, `embedded:FILE.gguf`, `MODEL@URL`.
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Sampling seed: same seed, same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop generating at this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Constrain the answer to this JSON schema (a file).
    #[arg(long, value_name = "FILE", conflicts_with = "json_object")]
    pub schema: Option<PathBuf>,
    /// Constrain the answer to some JSON object.
    #[arg(long)]
    pub json_object: bool,
    /// Print the whole response as JSON instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// A PEFT LoRA adapter folder (e.g. the `adapter/` of `demorecon train`) applied to the
    /// embedded model at load.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
}

pub async fn run(args: ChatArgs, ctx: &Context) -> anyhow::Result<()> {
    let response_format = match (&args.schema, args.json_object) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let schema: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            ResponseFormat::JsonSchema {
                name: "answer".into(),
                schema,
            }
        }
        (None, true) => ResponseFormat::JsonObject,
        (None, false) => ResponseFormat::Text,
    };
    let mut messages = Vec::new();
    if let Some(system) = args.system {
        messages.push(Message::system(system));
    }
    messages.push(Message::user(args.prompt));
    let req = ChatRequest {
        messages,
        sampling: Sampling {
            temperature: args.temperature,
            top_p: args.top_p,
            max_tokens: args.max_tokens,
            stop: args.stop,
            seed: args.seed,
        },
        response_format,
        prompt_version: None,
    };
    let spec = crate::adapter::model_spec(args.adapter.as_deref(), args.model.as_deref(), ctx)?;
    let model = ctx.model_for(RoleName::Target, spec.as_deref())?;
    let started = Instant::now();
    if args.json {
        let resp = model.chat(&req, None).await?;
        let mut value = serde_json::to_value(&resp)?;
        value["cached"] = serde_json::Value::Bool(resp.cached);
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let printer = tokio::spawn(async move {
        let mut out = std::io::stdout();
        while let Some(delta) = rx.recv().await {
            let _ = out.write_all(delta.as_bytes());
            let _ = out.flush();
        }
    });
    let result = model.chat(&req, Some(tx)).await;
    let _ = printer.await;
    let resp = result?;
    println!();
    eprintln!(
        "[{} · cache {} · {} prompt + {} completion tokens · {:.1}s]",
        resp.model,
        if resp.cached { "hit" } else { "miss" },
        resp.usage.prompt_tokens,
        resp.usage.completion_tokens,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
