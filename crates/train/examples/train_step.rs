//! Times SFT+DPO optimiser steps on one preference pair of two fixed-length sequences — the
//! benchmark behind `scripts/bench-train.sh` — and splits each step into its phases.
//!
//! `cargo run -p demorecon-train --example train_step -- [--gguf FILE] [--len 128]
//! [--prompt 64] [--rank 16] [--targets q,k,v,o] [--steps 3] [--pair FILE] [--describe]`
//! (`--pair`: JSON `{"chosen": [ids], "rejected": [ids], "prompt_len": n}` instead of random
//! ids, so another implementation can be timed on the same tokens).
//! Prints one JSON line per step (`ref_s`, `forward_s`, `backward_s`, `optimizer_s`,
//! `step_s`, `cpu_s`, `tokens_per_s`); the reference pass is included in the step, as TRL runs it.
//! `--describe` prints the GEMM backend and thread settings the steps would run with, and
//! exits.

use demorecon_train::data::{Example, Sequence};
use demorecon_train::loss::Mode;
use demorecon_train::model::{LoraSpec, TrainLlama, parse_targets};
use demorecon_train::optim::{AdamW, AdamWConfig};
use demorecon_train::trainer::{self, MicroBatch, TrainConfig};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut gguf = None;
    let (mut len, mut prompt, mut rank, mut steps) = (128usize, 64usize, 16usize, 3usize);
    let mut targets = "q,k,v,o".to_string();
    let mut pair_file = None;
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--gguf" => gguf = Some(std::path::PathBuf::from(value()?)),
            "--len" => len = value()?.parse()?,
            "--prompt" => prompt = value()?.parse()?,
            "--rank" => rank = value()?.parse()?,
            "--steps" => steps = value()?.parse()?,
            "--targets" => targets = value()?,
            "--pair" => pair_file = Some(value()?),
            "--describe" => {
                println!("ours: GEMM {}", demorecon_train::ops::blas::describe());
                return Ok(());
            }
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let gguf = match gguf {
        Some(path) => path,
        None => demorecon_gguf::ensure_model(&demorecon_llm::home::data_home())?,
    };
    let base = demorecon_train::Base::load(&gguf)?;
    let lora = LoraSpec {
        rank,
        alpha: 2.0 * rank as f64,
        dropout: 0.0,
        targets: parse_targets(&targets)?,
    };
    let model = TrainLlama::new(base.config.clone(), &base.weights, lora, 0)?;
    // One pair: a shared prompt, two different responses, `len` tokens each.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let vocab = base.config.vocab_size as u32;
    let mut seq = || Sequence {
        ids: (0..len).map(|_| rng.random_range(100..vocab)).collect(),
        labels: (0..len).map(|t| t >= prompt).collect(),
    };
    let (chosen, rejected) = match pair_file {
        Some(path) => {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
            let prompt = v["prompt_len"].as_u64().unwrap_or(0) as usize;
            let ids = |key: &str| -> Vec<u32> {
                v[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_u64())
                            .map(|x| x as u32)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let seq = |ids: Vec<u32>| Sequence {
                labels: (0..ids.len()).map(|t| t >= prompt).collect(),
                ids,
            };
            len = v["chosen"].as_array().map_or(0, |a| a.len());
            (seq(ids("chosen")), seq(ids("rejected")))
        }
        None => {
            let chosen = seq();
            let mut rejected = seq();
            rejected.ids[..prompt].copy_from_slice(&chosen.ids[..prompt]);
            (chosen, rejected)
        }
    };
    let example = Example::Pair { chosen, rejected };
    let cfg = TrainConfig {
        mode: Mode::SftDpo,
        ..TrainConfig::default()
    };
    let vars: Vec<candle_core::Var> = model.lora_vars().into_iter().map(|(_, v)| v).collect();
    let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
    let mut optimizer = AdamW::new(AdamWConfig::default(), &sizes);
    for step in 1..=steps {
        let started = Instant::now();
        let cpu_started = cpu_seconds();
        let Example::Pair { chosen, rejected } = &example else {
            unreachable!()
        };
        let reference = vec![Some((
            trainer::sequence_logp(&model, chosen)?,
            trainer::sequence_logp(&model, rejected)?,
        ))];
        let ref_s = started.elapsed().as_secs_f64();
        let mb = MicroBatch::new(&[&example], &reference)?;
        let t = Instant::now();
        let parts = trainer::micro_loss(&model, &mb, &cfg, None)?;
        let forward_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = parts.loss.backward()?;
        let grads: Vec<Vec<f32>> = vars
            .iter()
            .map(|v| match grads.get(v) {
                Some(g) => g.flatten_all().and_then(|g| g.to_vec1()),
                None => Ok(vec![0.0; v.elem_count()]),
            })
            .collect::<candle_core::Result<_>>()?;
        let backward_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut grads = grads;
        demorecon_train::optim::clip_global_norm(&mut grads, 1.0);
        optimizer.step(&vars, &grads, 1e-4)?;
        let optimizer_s = t.elapsed().as_secs_f64();
        let step_s = started.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "step": step,
                "loss": parts.loss.to_scalar::<f32>()?,
                "ref_s": ref_s,
                "forward_s": forward_s,
                "backward_s": backward_s,
                "optimizer_s": optimizer_s,
                "step_s": step_s,
                "cpu_s": cpu_seconds().zip(cpu_started).map(|(end, start)| end - start),
                "tokens_per_s": (2 * len) as f64 / step_s,
            })
        );
    }
    Ok(())
}

/// CPU time (user + system, all threads) the process has used, from `/proc/self/stat`
/// (Linux; `None` elsewhere): on a shared machine it shows the work a step did, whatever the
/// other processes took of the wall-clock time.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux configuration in practice.
    Some(ticks / 100.0)
}
