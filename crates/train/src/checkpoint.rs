//! Checkpoints: everything a run needs to continue exactly where it stopped — the LoRA
//! tensors, AdamW's moments and step count, the optimiser step reached (which fixes the data
//! cursor and every random stream, all derived from the seed and the step), and a fingerprint
//! of the run's settings and data so a resume with different ones is refused.
//!
//! Each checkpoint is written into a temporary folder and renamed into place, then the
//! `latest` pointer is replaced atomically; a crash at any moment leaves the previous
//! checkpoint usable.

use crate::optim::AdamW;
use anyhow::Context as _;
use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The small JSON part of a checkpoint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct CheckpointState {
    /// Optimiser steps completed.
    pub step: usize,
    /// AdamW's step counter.
    pub adam_t: u64,
    /// The epoch and micro-batch the next step starts at (derivable from `step`; stored for
    /// people reading the folder).
    pub epoch: usize,
    pub micro_batch: usize,
    pub seed: u64,
    /// blake3 of the settings and the tokenized data.
    pub fingerprint: String,
}

pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// Writes checkpoint `state.step` under `out/checkpoints/` and points `latest` at it; keeps
/// only the newest `keep` checkpoints.
pub fn save(
    out: &Path,
    vars: &[(String, Var)],
    optimizer: &AdamW,
    state: &CheckpointState,
    keep: usize,
) -> anyhow::Result<PathBuf> {
    let root = checkpoints_dir(out);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let name = format!("step-{:08}", state.step);
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(&root)
        .context("creating a temporary checkpoint folder")?;
    let mut adapter = HashMap::new();
    let mut moments = HashMap::new();
    for (i, (name, var)) in vars.iter().enumerate() {
        adapter.insert(name.clone(), var.as_tensor().clone());
        let shape = var.shape();
        moments.insert(
            format!("{name}.m"),
            Tensor::from_slice(&optimizer.m[i], shape, &Device::Cpu)?,
        );
        moments.insert(
            format!("{name}.v"),
            Tensor::from_slice(&optimizer.v[i], shape, &Device::Cpu)?,
        );
    }
    candle_core::safetensors::save(&adapter, tmp.path().join("adapter.safetensors"))?;
    candle_core::safetensors::save(&moments, tmp.path().join("optimizer.safetensors"))?;
    std::fs::write(
        tmp.path().join("state.json"),
        serde_json::to_string_pretty(state)?,
    )?;
    let dest = root.join(&name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest)?;
    }
    let tmp_path = tmp.keep();
    std::fs::rename(&tmp_path, &dest)
        .with_context(|| format!("moving the checkpoint to {}", dest.display()))?;
    let pointer = root.join(".latest.tmp");
    std::fs::write(&pointer, format!("{name}\n"))?;
    std::fs::rename(&pointer, root.join("latest"))?;
    // Older checkpoints beyond `keep` go.
    let mut names: Vec<String> = std::fs::read_dir(&root)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep.max(1));
    for old in &names[..excess] {
        let _ = std::fs::remove_dir_all(root.join(old));
    }
    Ok(dest)
}

/// The latest checkpoint under `out`, if any.
pub fn latest(out: &Path) -> anyhow::Result<Option<PathBuf>> {
    let pointer = checkpoints_dir(out).join("latest");
    match std::fs::read_to_string(&pointer) {
        Ok(name) => Ok(Some(checkpoints_dir(out).join(name.trim()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", pointer.display())),
    }
}

/// Loads a checkpoint into `vars` and `optimizer`; returns its state.
pub fn load(
    dir: &Path,
    vars: &[(String, Var)],
    optimizer: &mut AdamW,
) -> anyhow::Result<CheckpointState> {
    let state: CheckpointState = serde_json::from_str(
        &std::fs::read_to_string(dir.join("state.json"))
            .with_context(|| format!("reading {}", dir.join("state.json").display()))?,
    )?;
    let adapter = candle_core::safetensors::load(dir.join("adapter.safetensors"), &Device::Cpu)?;
    let moments = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &Device::Cpu)?;
    for (i, (name, var)) in vars.iter().enumerate() {
        let get = |map: &HashMap<String, Tensor>, key: &str| -> anyhow::Result<Tensor> {
            let t = map
                .get(key)
                .ok_or_else(|| anyhow::anyhow!("checkpoint {} lacks {key}", dir.display()))?;
            if t.shape() != var.shape() {
                anyhow::bail!("checkpoint tensor {key} has shape {:?}", t.shape());
            }
            Ok(t.clone())
        };
        var.set(&get(&adapter, name)?)?;
        optimizer.m[i] = get(&moments, &format!("{name}.m"))?
            .flatten_all()?
            .to_vec1()?;
        optimizer.v[i] = get(&moments, &format!("{name}.v"))?
            .flatten_all()?
            .to_vec1()?;
    }
    optimizer.t = state.adam_t;
    Ok(state)
}
