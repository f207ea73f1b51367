//! Writes the trainable model's logits for a token sequence, for checking our forward pass
//! against other implementations (`scripts/check-hf-interop.sh`).
//!
//! `cargo run -p demorecon-train --example logits -- --gguf FILE [--adapter DIR]
//! --ids 1,2,3 --out FILE.f32` writes `len × vocab` little-endian f32 values, row-major; with
//! `--adapter`, a PEFT adapter is applied as LoRA (not merged) on top of the GGUF.

use demorecon_train::model::{Adapter, LoraSpec, TokenBatch, TrainLlama};
use std::io::Write;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut gguf, mut adapter, mut ids, mut out) = (None, None, Vec::new(), None);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--gguf" => gguf = Some(std::path::PathBuf::from(value()?)),
            "--adapter" => adapter = Some(std::path::PathBuf::from(value()?)),
            "--ids" => {
                ids = value()?
                    .split(',')
                    .map(|s| s.trim().parse::<u32>())
                    .collect::<Result<_, _>>()?
            }
            "--out" => out = Some(std::path::PathBuf::from(value()?)),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let gguf = gguf.ok_or_else(|| anyhow::anyhow!("--gguf FILE is required"))?;
    let out = out.ok_or_else(|| anyhow::anyhow!("--out FILE is required"))?;
    if ids.is_empty() {
        anyhow::bail!("--ids is required");
    }
    let base = demorecon_train::Base::load(&gguf)?;
    let (model, on) = match &adapter {
        Some(dir) => {
            let (pairs, scale) = demorecon_train::export::read_peft_adapter(dir, &base.config)?;
            let rank = pairs[0].a.dim(0)?;
            let mut targets: Vec<_> = pairs.iter().map(|p| p.target).collect();
            targets.sort();
            targets.dedup();
            let lora = LoraSpec {
                rank,
                alpha: scale * rank as f64,
                dropout: 0.0,
                targets,
            };
            let model = TrainLlama::new(base.config.clone(), &base.weights, lora, 0)?;
            let vars = model.lora_vars();
            if vars.len() != 2 * pairs.len() {
                anyhow::bail!("the adapter does not cover every layer of its targets");
            }
            for (pair, chunk) in pairs.iter().zip(vars.chunks(2)) {
                chunk[0].1.set(&pair.a)?;
                chunk[1].1.set(&pair.b)?;
            }
            (model, true)
        }
        None => {
            let lora = LoraSpec {
                rank: 1,
                alpha: 1.0,
                dropout: 0.0,
                targets: vec![demorecon_train::model::Target::Q],
            };
            (
                TrainLlama::new(base.config.clone(), &base.weights, lora, 0)?,
                false,
            )
        }
    };
    let labels = vec![false; ids.len()];
    let batch = TokenBatch::new(&[(&ids[..], &labels[..])], 0);
    let mut mode = if on { Adapter::On(None) } else { Adapter::Off };
    let logits = model.logits(&batch, &mut mode)?;
    let values = logits.flatten_all()?.to_vec1::<f32>()?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
    for v in values {
        file.write_all(&v.to_le_bytes())?;
    }
    file.flush()?;
    eprintln!("wrote {:?} logits to {}", logits.dims(), out.display());
    Ok(())
}
