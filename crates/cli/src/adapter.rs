//! `--adapter DIR` for `serve` and `chat`: a trained PEFT LoRA adapter applied to the
//! embedded model at load, by merging it into a GGUF once (cached under the data directory)
//! and loading that like any other `embedded:FILE`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::context::Context;

/// The backend spec a command with `--model` and `--adapter` flags should use: the model as
/// given, or, with an adapter, the embedded model with it merged in.
pub fn model_spec(
    adapter: Option<&Path>,
    model: Option<&str>,
    ctx: &Context,
) -> anyhow::Result<Option<String>> {
    Ok(match adapter {
        Some(dir) => Some(adapted_model_spec(dir, model, ctx)?),
        None => model.map(str::to_owned),
    })
}

/// The `embedded:FILE` spec of the embedded model with the adapter in `dir` merged in. The
/// merged GGUF is written once under the data directory, named by a hash of the base and
/// the adapter, so the model goes through the usual `Context` path (cache, ledger) with an
/// identity of its own.
fn adapted_model_spec(dir: &Path, model: Option<&str>, ctx: &Context) -> anyhow::Result<String> {
    let home = demorecon_llm::home::data_home();
    let base = match model {
        Some(spec) if spec.starts_with("embedded:") => PathBuf::from(&spec["embedded:".len()..]),
        Some("embedded") | None => match &ctx.global.model_path {
            Some(path) => path.clone(),
            None => demorecon_gguf::ensure_model(&home)?,
        },
        Some(other) => anyhow::bail!("--adapter applies to the embedded backend, not `{other}`"),
    };
    let mut hasher = blake3::Hasher::new();
    let base_digest = demorecon_gguf::store::cached_sha256(&base)
        .map_err(|e| anyhow::anyhow!("hashing {}: {e}", base.display()))?;
    hasher.update(base_digest.as_bytes());
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        hasher.update(&bytes);
    }
    // Named after the base so clients see which model it is (the default served name).
    let merged = home.join("train").join("merged").join(format!(
        "{}-lora-{}.gguf",
        demorecon_gguf::model_name(&base),
        &hasher.finalize().to_hex()[..12]
    ));
    if !merged.exists() {
        eprintln!(
            "demorecon: merging the adapter {} into {}",
            dir.display(),
            base.display()
        );
        demorecon_train::export::merge_adapter_into_gguf(&base, dir, &merged)?;
    }
    Ok(format!("embedded:{}", merged.display()))
}
