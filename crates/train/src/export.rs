//! What a run leaves behind, in formats other tools read:
//!
//! - a PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`) with Hugging
//!   Face `LlamaForCausalLM` parameter names, loadable by `peft` onto the HF model;
//! - the merged model as a GGUF (original tensors as stored; every matrix LoRA touched, and its
//!   fused partners q/k/v or gate/up, written as f32) that the embedded backend loads;
//! - the merged model as Hugging Face safetensors + `config.json` + `tokenizer.json`.
//!
//! GGUF stores q/k rows permuted for interleaved RoPE (llama.cpp's converter reshapes each
//! head's rows `(2, hd/2) → (hd/2, 2)`). Training happens in that layout, so q/k LoRA `B` rows
//! and q/k weights are un-permuted on the way to Hugging Face names and permuted back when a
//! PEFT adapter is applied to a GGUF ([`merge_adapter_into_gguf`]).

use crate::model::{BaseWeights, Target, TrainLlama};
use anyhow::Context as _;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use demorecon_gguf::LlamaConfig;
use demorecon_gguf::tokenizer::{meta_str, meta_u32};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// GGUF row order → Hugging Face row order for a q/k matrix of `heads` heads.
pub fn gguf_to_hf_rows(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    let hd = rows / heads;
    t.reshape((heads, hd / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// Hugging Face row order → GGUF row order (the inverse of [`gguf_to_hf_rows`]).
pub fn hf_to_gguf_rows(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    let hd = rows / heads;
    t.reshape((heads, 2, hd / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// The heads whose rows a target's output is laid out in, when RoPE permutes it.
fn permuted_heads(cfg: &LlamaConfig, target: Target) -> Option<usize> {
    match target {
        Target::Q => Some(cfg.head_count),
        Target::K => Some(cfg.head_count_kv),
        _ => None,
    }
}

/// A LoRA pair in GGUF layout: `delta = scale · B·A`.
pub struct LoraPair {
    pub layer: usize,
    pub target: Target,
    pub a: Tensor,
    pub b: Tensor,
}

/// The trained adapter's pairs (GGUF layout).
pub fn model_pairs(model: &TrainLlama) -> Vec<LoraPair> {
    let vars = model.lora_vars();
    let mut pairs = Vec::new();
    for chunk in vars.chunks(2) {
        let [(name, a), (_, b)] = chunk else { continue };
        if let Some((layer, target)) = parse_module(name) {
            pairs.push(LoraPair {
                layer,
                target,
                a: a.as_tensor().detach(),
                b: b.as_tensor().detach(),
            });
        }
    }
    pairs
}

/// `model.layers.N.self_attn.q_proj...` → (N, Q).
fn parse_module(name: &str) -> Option<(usize, Target)> {
    let rest = name.split("layers.").nth(1)?;
    let (layer, rest) = rest.split_once('.')?;
    let module = rest.split('.').nth(1)?;
    Some((layer.parse().ok()?, module.parse().ok()?))
}

/// Writes a PEFT adapter for `pairs` into `dir`.
pub fn write_peft_adapter(
    dir: &Path,
    cfg: &LlamaConfig,
    pairs: &[LoraPair],
    rank: usize,
    alpha: f64,
    dropout: f32,
    base_model: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tensors = HashMap::new();
    let mut targets: Vec<Target> = Vec::new();
    for p in pairs {
        let prefix = format!(
            "base_model.model.model.layers.{}.{}",
            p.layer,
            p.target.hf_path()
        );
        let b = match permuted_heads(cfg, p.target) {
            Some(heads) => gguf_to_hf_rows(&p.b, heads)?,
            None => p.b.clone(),
        };
        tensors.insert(format!("{prefix}.lora_A.weight"), p.a.contiguous()?);
        tensors.insert(format!("{prefix}.lora_B.weight"), b);
        if !targets.contains(&p.target) {
            targets.push(p.target);
        }
    }
    targets.sort();
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors"))?;
    let config = json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": rank,
        "rank_pattern": {},
        "revision": null,
        "target_modules": targets.iter().map(|t| t.hf_name()).collect::<Vec<_>>(),
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": false
    });
    demorecon_io::write_json_pretty(&dir.join("adapter_config.json"), &config)?;
    Ok(())
}

/// Reads a PEFT LoRA adapter for a llama model; returns its pairs in GGUF layout and the
/// scale (`lora_alpha / r`, or `/ √r` with rsLoRA).
pub fn read_peft_adapter(dir: &Path, cfg: &LlamaConfig) -> anyhow::Result<(Vec<LoraPair>, f64)> {
    let config_path = dir.join("adapter_config.json");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", config_path.display()))?;
    if config["peft_type"].as_str().unwrap_or("LORA") != "LORA" {
        anyhow::bail!(
            "{}: only LoRA adapters are supported",
            config_path.display()
        );
    }
    let rank = config["r"]
        .as_f64()
        .context("adapter_config.json lacks r")?;
    let alpha = config["lora_alpha"].as_f64().unwrap_or(rank);
    let scale = if config["use_rslora"].as_bool().unwrap_or(false) {
        alpha / rank.sqrt()
    } else {
        alpha / rank
    };
    if config["use_dora"].as_bool().unwrap_or(false) {
        anyhow::bail!("{}: DoRA adapters are not supported", config_path.display());
    }
    let weights_path = dir.join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
        .with_context(|| format!("reading {}", weights_path.display()))?;
    let mut pairs = Vec::new();
    for (name, a) in &tensors {
        let Some(module) = name.strip_suffix(".lora_A.weight") else {
            continue;
        };
        let Some((layer, target)) = parse_module(module) else {
            anyhow::bail!("{}: unexpected tensor {name}", weights_path.display());
        };
        let b = tensors
            .get(&format!("{module}.lora_B.weight"))
            .with_context(|| format!("{}: {module} has no lora_B", weights_path.display()))?;
        let b = b.to_dtype(DType::F32)?;
        let b = match permuted_heads(cfg, target) {
            Some(heads) => hf_to_gguf_rows(&b, heads)?,
            None => b,
        };
        pairs.push(LoraPair {
            layer,
            target,
            a: a.to_dtype(DType::F32)?,
            b,
        });
    }
    if pairs.is_empty() {
        anyhow::bail!("{} holds no LoRA tensors", weights_path.display());
    }
    pairs.sort_by_key(|p| (p.layer, p.target));
    Ok((pairs, scale))
}

/// The merged f32 matrices (GGUF names and layout) for `pairs` over `base`.
pub fn merged_matrices(
    base: &BaseWeights,
    pairs: &[LoraPair],
    scale: f64,
) -> anyhow::Result<BTreeMap<String, Tensor>> {
    let mut merged = BTreeMap::new();
    for p in pairs {
        let name = format!("blk.{}.{}.weight", p.layer, p.target.gguf_name());
        let w = base
            .get(&name)
            .with_context(|| format!("the base model lacks {name}"))?;
        let delta = (p.b.matmul(&p.a)? * scale)?;
        if delta.dims() != w.dims() {
            anyhow::bail!(
                "LoRA for {name} has shape {:?}, the weight {:?}",
                delta.dims(),
                w.dims()
            );
        }
        merged.insert(name, (w.to_dtype(DType::F32)? + delta)?);
    }
    Ok(merged)
}

/// The fused partners of a projection in the embedded model (they must share a dtype).
fn group_of(name: &str) -> Vec<String> {
    let Some((prefix, kind)) = name
        .rsplit_once('.')
        .and_then(|(head, _)| head.rsplit_once('.'))
    else {
        return vec![name.to_string()];
    };
    let members: &[&str] = match kind {
        "attn_q" | "attn_k" | "attn_v" => &["attn_q", "attn_k", "attn_v"],
        "ffn_gate" | "ffn_up" => &["ffn_gate", "ffn_up"],
        _ => return vec![name.to_string()],
    };
    members
        .iter()
        .map(|m| format!("{prefix}.{m}.weight"))
        .collect()
}

/// Copies the GGUF at `src` to `dest` with `replaced` tensors (f32, GGUF names) swapped in;
/// metadata (tokenizer, chat template) is kept, `general.name` gets `name_suffix`.
pub fn write_merged_gguf(
    src: &Path,
    dest: &Path,
    replaced: &BTreeMap<String, Tensor>,
    name_suffix: &str,
) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .with_context(|| format!("{} is not a readable GGUF", src.display()))?;
    let device = Device::Cpu;
    let mut promote: BTreeMap<String, ()> = BTreeMap::new();
    for name in replaced.keys() {
        for member in group_of(name) {
            promote.insert(member, ());
        }
    }
    // Tensors in the source's order, so the file reads like the original.
    let mut infos: Vec<(&String, &gguf_file::TensorInfo)> = content.tensor_infos.iter().collect();
    infos.sort_by_key(|(_, info)| info.offset);
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(infos.len());
    for (name, _) in infos {
        let tensor = if let Some(t) = replaced.get(name) {
            QTensor::quantize(&t.contiguous()?, GgmlDType::F32)?
        } else {
            let q = content.tensor(&mut file, name, &device)?;
            if promote.contains_key(name) && q.dtype() != GgmlDType::F32 {
                QTensor::quantize(&q.dequantize(&device)?, GgmlDType::F32)?
            } else {
                q
            }
        };
        tensors.push((name.clone(), tensor));
    }
    let mut metadata: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    if !name_suffix.is_empty() {
        let base = meta_str(&content, "general.name")
            .unwrap_or("model")
            .to_string();
        metadata.retain(|(k, _)| k != "general.name");
        metadata.push((
            "general.name".into(),
            gguf_file::Value::String(format!("{base}{name_suffix}")),
        ));
    }
    // Written beside the destination and renamed, so a reader never sees half a file.
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut out = std::io::BufWriter::new(tmp.as_file());
        let meta_refs: Vec<(&str, &gguf_file::Value)> =
            metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> =
            tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut out, &meta_refs, &tensor_refs)?;
        use std::io::Write;
        out.flush()?;
    }
    tmp.persist(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

/// Applies the PEFT adapter in `adapter_dir` to the GGUF at `base` and writes the merged GGUF
/// to `dest`.
pub fn merge_adapter_into_gguf(base: &Path, adapter_dir: &Path, dest: &Path) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::open(base).with_context(|| format!("opening {}", base.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .with_context(|| format!("{} is not a readable GGUF", base.display()))?;
    let cfg = LlamaConfig::from_gguf(&content)?;
    let (pairs, scale) = read_peft_adapter(adapter_dir, &cfg)?;
    let mut weights = BaseWeights::new();
    for p in &pairs {
        let name = format!("blk.{}.{}.weight", p.layer, p.target.gguf_name());
        if let std::collections::btree_map::Entry::Vacant(slot) = weights.entry(name) {
            let q = content
                .tensor(&mut file, slot.key(), &Device::Cpu)
                .with_context(|| format!("{} lacks {}", base.display(), slot.key()))?;
            slot.insert(q.dequantize(&Device::Cpu)?);
        }
    }
    let merged = merged_matrices(&weights, &pairs, scale)?;
    write_merged_gguf(base, dest, &merged, "-lora-merged")
}

/// Hugging Face's name for a GGUF tensor, and whether its rows need un-permuting (heads).
fn hf_name(name: &str, cfg: &LlamaConfig) -> Option<(String, Option<usize>)> {
    match name {
        "token_embd.weight" => return Some(("model.embed_tokens.weight".into(), None)),
        "output_norm.weight" => return Some(("model.norm.weight".into(), None)),
        "output.weight" => return Some(("lm_head.weight".into(), None)),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let kind = rest.strip_suffix(".weight")?;
    let layer: usize = layer.parse().ok()?;
    let prefix = format!("model.layers.{layer}");
    let (path, heads) = match kind {
        "attn_norm" => ("input_layernorm".to_string(), None),
        "ffn_norm" => ("post_attention_layernorm".to_string(), None),
        other => {
            let target = Target::ALL.into_iter().find(|t| t.gguf_name() == other)?;
            (target.hf_path().to_string(), permuted_heads(cfg, target))
        }
    };
    Some((format!("{prefix}.{path}.weight"), heads))
}

/// Writes the model (`base` with `merged` swapped in) as a Hugging Face `LlamaForCausalLM`
/// folder: `model.safetensors` (f32), `config.json`, `generation_config.json`,
/// `tokenizer.json`, `tokenizer_config.json`.
pub fn write_hf(
    dir: &Path,
    content: &gguf_file::Content,
    base: &BaseWeights,
    merged: &BTreeMap<String, Tensor>,
    tokenizer_json: &str,
) -> anyhow::Result<()> {
    let cfg = LlamaConfig::from_gguf(content)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tensors = HashMap::new();
    for (name, tensor) in base {
        let tensor = merged.get(name).unwrap_or(tensor);
        let Some((hf, heads)) = hf_name(name, &cfg) else {
            continue;
        };
        let tensor = tensor.to_dtype(DType::F32)?;
        let tensor = match heads {
            Some(h) => gguf_to_hf_rows(&tensor, h)?,
            None => tensor.contiguous()?,
        };
        tensors.insert(hf, tensor);
    }
    let ffn = base
        .get("blk.0.ffn_gate.weight")
        .context("the model lacks blk.0.ffn_gate.weight")?
        .dim(0)?;
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    let bos = meta_u32(content, "tokenizer.ggml.bos_token_id");
    let eos = meta_u32(content, "tokenizer.ggml.eos_token_id");
    let pad = meta_u32(content, "tokenizer.ggml.padding_token_id");
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "hidden_size": cfg.embedding_length,
        "initializer_range": 0.02,
        "intermediate_size": ffn,
        "max_position_embeddings": cfg.context_length,
        "mlp_bias": false,
        "num_attention_heads": cfg.head_count,
        "num_hidden_layers": cfg.block_count,
        "num_key_value_heads": cfg.head_count_kv,
        "pretraining_tp": 1,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_scaling": null,
        "rope_theta": cfg.rope_freq_base,
        "tie_word_embeddings": !base.contains_key("output.weight"),
        "torch_dtype": "float32",
        "use_cache": true,
        "vocab_size": cfg.vocab_size
    });
    demorecon_io::write_json_pretty(&dir.join("config.json"), &config)?;
    let generation = json!({"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad});
    demorecon_io::write_json_pretty(&dir.join("generation_config.json"), &generation)?;
    demorecon_io::write_atomic(&dir.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    let tokens: Vec<String> = match content.metadata.get("tokenizer.ggml.tokens") {
        Some(gguf_file::Value::Array(values)) => values
            .iter()
            .map(|v| v.to_string().cloned().unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    };
    let token = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).cloned());
    let tokenizer_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token(bos),
        "eos_token": token(eos),
        "pad_token": token(pad),
        "add_bos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": cfg.context_length,
        "chat_template": meta_str(content, "tokenizer.chat_template"),
    });
    demorecon_io::write_json_pretty(&dir.join("tokenizer_config.json"), &tokenizer_config)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_round_trips_and_matches_llama_cpp() {
        // Two heads of dim 4: HF rows [h0: a0 a1 b0 b1 | h1: ...] become GGUF [a0 b0 a1 b1].
        let hf = Tensor::arange(0f32, 8.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 1))
            .unwrap();
        let gguf = hf_to_gguf_rows(&hf, 2).unwrap();
        let rows: Vec<f32> = gguf.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(rows, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        let back = gguf_to_hf_rows(&gguf, 2).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            (0..8).map(|x| x as f32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn module_names_parse() {
        assert_eq!(
            parse_module("model.layers.12.self_attn.k_proj.lora_A"),
            Some((12, Target::K))
        );
        assert_eq!(
            parse_module("base_model.model.model.layers.3.mlp.down_proj"),
            Some((3, Target::Down))
        );
        assert_eq!(
            group_of("blk.4.attn_k.weight"),
            vec![
                "blk.4.attn_q.weight",
                "blk.4.attn_k.weight",
                "blk.4.attn_v.weight"
            ]
        );
    }
}
