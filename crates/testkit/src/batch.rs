//! A stand-in for a batch service: answers OpenAI Batch input files with result files in the
//! form OpenAI's Batch API or vLLM's `run_batch` writes them, with some lines failed and the
//! lines out of order, so tests can drive `run --batch` / `batch import` round trips without
//! either service.
//!
//! OpenAI's form: answers in an output file, failures in a separate error file (an HTTP
//! error status with an error body, or no response and an `error` object such as an expired
//! batch); ids `batch_req_…`. vLLM's form: one file, failures inline (status 400, no body,
//! `error` a string or an error response object); ids `vllm-…`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::completion_json;
use crate::synth::fnv1a;

/// Which service's result files to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    OpenAi,
    Vllm,
}

/// What [`answer`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Answered {
    /// The result files, to pass to `batch import`.
    pub files: Vec<PathBuf>,
    pub answered: usize,
    pub failed: usize,
}

/// Answers every line of `inputs` with `reply(body)` and writes the results into `out_dir`
/// as `form` writes them. A line fails when a hash of its `custom_id` and `round` is a
/// multiple of `fail_every` (0: none fail), so a request that failed in one round is likely
/// answered in the next. Each file's lines come out in reverse order of the input.
pub fn answer(
    inputs: &[PathBuf],
    out_dir: &Path,
    form: Form,
    round: u64,
    fail_every: u64,
    reply: impl Fn(&Value) -> String,
) -> std::io::Result<Answered> {
    std::fs::create_dir_all(out_dir)?;
    let mut ok_lines = Vec::new();
    let mut error_lines = Vec::new();
    let mut done = Answered::default();
    for input in inputs {
        for line in std::fs::read_to_string(input)?.lines() {
            let request: Value = serde_json::from_str(line).map_err(std::io::Error::other)?;
            let custom_id = request["custom_id"].as_str().unwrap_or_default().to_owned();
            let n = fnv1a(format!("{custom_id}/{round}").as_bytes());
            let fails = fail_every > 0 && n.is_multiple_of(fail_every);
            let id = match form {
                Form::OpenAi => format!("batch_req_{n:016x}"),
                Form::Vllm => format!("vllm-{n:032x}"),
            };
            let request_id = match form {
                Form::OpenAi => format!("req_{n:x}"),
                Form::Vllm => format!("vllm-batch-{n:x}"),
            };
            if !fails {
                done.answered += 1;
                let body = completion_json(&request["body"], &reply(&request["body"]));
                ok_lines.push(json!({"id": id, "custom_id": custom_id,
                    "response": {"status_code": 200, "request_id": request_id, "body": body},
                    "error": null}));
                continue;
            }
            done.failed += 1;
            // Alternate between the two ways each service reports a failure.
            let line = match (form, (n >> 8) % 2) {
                (Form::OpenAi, 0) => json!({"id": id, "custom_id": custom_id,
                    "response": {"status_code": 500, "request_id": request_id,
                        "body": {"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}}},
                    "error": null}),
                (Form::OpenAi, _) => json!({"id": id, "custom_id": custom_id, "response": null,
                    "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}),
                (Form::Vllm, 0) => json!({"id": id, "custom_id": custom_id,
                    "response": {"status_code": 400, "request_id": request_id, "body": null},
                    "error": "Engine loop has died"}),
                (Form::Vllm, _) => json!({"id": id, "custom_id": custom_id,
                    "response": {"status_code": 400, "request_id": request_id, "body": null},
                    "error": {"error": {"message": "The model does not exist.", "type": "NotFoundError", "param": null, "code": 404}}}),
            };
            match form {
                Form::OpenAi => error_lines.push(line),
                Form::Vllm => ok_lines.push(line),
            }
        }
    }
    let write = |name: &str, mut lines: Vec<Value>| -> std::io::Result<PathBuf> {
        lines.reverse();
        let path = out_dir.join(name);
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let tag = format!("round{round:03}");
    match form {
        Form::OpenAi => {
            done.files
                .push(write(&format!("{tag}-openai-output.jsonl"), ok_lines)?);
            done.files
                .push(write(&format!("{tag}-openai-errors.jsonl"), error_lines)?);
        }
        Form::Vllm => done
            .files
            .push(write(&format!("{tag}-vllm-output.jsonl"), ok_lines)?),
    }
    Ok(done)
}
