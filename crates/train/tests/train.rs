//! The training crate end to end on a tiny random llama (2 layers, hidden 64, byte-level
//! vocabulary, written as a real GGUF): gradients against finite differences, the step-0
//! identity of policy and reference, learning a small preference set, exact resume, and the
//! exports (PEFT round trip, merged GGUF loaded by the embedded backend).

use candle_core::{Device, Tensor};
use demorecon_train::data::{ChatEncoder, Example, Sequence};
use demorecon_train::loss::Mode;
use demorecon_train::loss::{KtoInputs, kto_loss};
use demorecon_train::model::{Adapter, LoraSpec, Target, TokenBatch, TrainLlama};
use demorecon_train::refcache::{ModelKey, RefCache};
use demorecon_train::trainer::{self, EvalSplit, MicroBatch, TrainConfig};
use demorecon_train::{Base, RunOptions, export, tiny};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    tiny::write_tiny_gguf(&path, 11).unwrap();
    path
}

fn lora(rank: usize, targets: &[Target], dropout: f32) -> LoraSpec {
    LoraSpec {
        rank,
        alpha: 2.0 * rank as f64,
        dropout,
        targets: targets.to_vec(),
    }
}

/// Preference rows whose chosen answers end with a fixed phrase.
fn write_prefs(path: &Path, n: usize) {
    let topics = [
        "rivers", "stars", "bread", "clocks", "maps", "salt", "glass", "wind", "snow", "iron",
    ];
    let mut text = String::new();
    for i in 0..n {
        let topic = topics[i % topics.len()];
        let row = serde_json::json!({
            "prompt": [{"role": "user", "content": format!("Tell me about {topic}.")}],
            "chosen": [{"role": "assistant", "content": format!("{topic} matter. OK!")}],
            "rejected": [{"role": "assistant", "content": format!("{topic} are dull.")}],
        });
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// The exported adapter of the run folder `dir/run`.
fn adapter_bytes(dir: &Path, run: &str) -> Vec<u8> {
    std::fs::read(dir.join(run).join("adapter/adapter_model.safetensors")).unwrap()
}

fn random_seq(rng: &mut ChaCha8Rng, len: usize, prompt: usize, vocab: u32) -> Sequence {
    Sequence {
        ids: (0..len).map(|_| rng.random_range(3..vocab)).collect(),
        labels: (0..len).map(|t| t >= prompt).collect(),
    }
}

fn random_examples(vocab: u32, seed: u64) -> Vec<Example> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut examples = Vec::new();
    for (len_c, len_r) in [(12, 9), (7, 14), (10, 10)] {
        let chosen = random_seq(&mut rng, len_c, 4, vocab);
        let mut rejected = random_seq(&mut rng, len_r, 4, vocab);
        rejected.ids[..4].copy_from_slice(&chosen.ids[..4]);
        examples.push(Example::Pair { chosen, rejected });
    }
    examples.push(Example::Sft(random_seq(&mut rng, 11, 3, vocab)));
    examples
}

fn random_model(targets: &[Target], seed: u64) -> TrainLlama {
    let cfg = demorecon_train::model::tiny_config(64);
    let base = demorecon_train::model::random_base(&cfg, 96, seed).unwrap();
    TrainLlama::new(cfg, &base, lora(4, targets, 0.0), seed).unwrap()
}

fn key() -> ModelKey {
    ModelKey {
        model_sha256: "test".into(),
        tokenizer_digest: "test".into(),
    }
}

#[test]
fn gradients_reach_every_lora_tensor_and_match_finite_differences() {
    // All projections adapted (the MLP as separate autograd ops), then attention only (the MLP
    // as one fused op).
    gradient_check(
        &Target::ALL,
        &[
            "layers.0.self_attn.q_proj",
            "layers.1.self_attn.k_proj",
            "layers.1.mlp.down_proj",
            "layers.0.mlp.gate_proj",
        ],
    );
    gradient_check(
        &[Target::Q, Target::K, Target::V, Target::O],
        &[
            "layers.0.self_attn.q_proj",
            "layers.0.self_attn.v_proj",
            "layers.1.self_attn.k_proj",
            "layers.1.self_attn.o_proj",
        ],
    );
}

fn gradient_check(targets: &[Target], probe: &[&str]) {
    let model = random_model(targets, 3);
    // B = 0 at initialisation makes A's gradient vanish; give B values to test both.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (name, var) in model.lora_vars() {
        if name.ends_with("lora_B") {
            let values: Vec<f32> = (0..var.elem_count())
                .map(|_| rng.random_range(-0.1..0.1))
                .collect();
            var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let examples = random_examples(64, 9);
    let mut cache = RefCache::in_memory();
    let refs = trainer::reference_logps(&model, &examples, &key(), &mut cache, false).unwrap();
    let picked: Vec<&Example> = examples.iter().collect();
    let mb = MicroBatch::new(&picked, &refs).unwrap();
    let cfg = TrainConfig {
        mode: Mode::SftDpo,
        beta: 0.5,
        sft_weight: 0.7,
        ..TrainConfig::default()
    };
    let loss_of = || -> f64 {
        trainer::micro_loss(&model, &mb, &cfg, None)
            .unwrap()
            .loss
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let parts = trainer::micro_loss(&model, &mb, &cfg, None).unwrap();
    let grads = parts.loss.backward().unwrap();
    let vars = model.lora_vars();
    assert_eq!(vars.len(), 2 * targets.len() * 2);
    let mut checked = 0;
    for (name, var) in &vars {
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("{name} got no gradient"));
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        let largest = g.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(largest > 0.0, "{name} has an all-zero gradient");
        // Finite differences on the entry with the largest gradient of a few tensors.
        if !probe.iter().any(|p| name.contains(p)) {
            continue;
        }
        assert_central_difference(name, var, &g, loss_of);
        checked += 1;
    }
    assert_eq!(checked, 8);
}

/// Compares the analytic gradient `g` of `var` at its largest entry with a central
/// difference of `loss` (the variable is restored afterwards).
fn assert_central_difference(
    name: &str,
    var: &candle_core::Var,
    g: &[f32],
    loss: impl Fn() -> f64,
) {
    let largest = g.iter().fold(0f32, |m, x| m.max(x.abs()));
    let j = g.iter().position(|x| x.abs() == largest).unwrap();
    let original: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let eps = 1e-2f32;
    let at = |delta: f32| {
        let mut values = original.clone();
        values[j] += delta;
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
        loss()
    };
    let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
    var.set(&Tensor::from_vec(original, var.shape(), &Device::Cpu).unwrap())
        .unwrap();
    let analytic = g[j] as f64;
    assert!(
        (numeric - analytic).abs() <= 0.03 * analytic.abs() + 1e-4,
        "{name}[{j}]: analytic {analytic}, numeric {numeric}"
    );
}

#[test]
fn at_step_zero_the_policy_is_the_reference() {
    let model = random_model(&[Target::Q, Target::V, Target::Up], 4);
    let examples = random_examples(64, 10);
    let mut cache = RefCache::in_memory();
    let refs = trainer::reference_logps(&model, &examples, &key(), &mut cache, false).unwrap();
    // A padded batch of three pairs of different lengths plus an SFT row.
    let picked: Vec<&Example> = examples.iter().collect();
    let mb = MicroBatch::new(&picked, &refs).unwrap();
    let cfg = TrainConfig {
        mode: Mode::Dpo,
        beta: 0.1,
        ..TrainConfig::default()
    };
    // The reference pass runs one sequence at a time, the policy a padded batch: equal up to
    // the summation order gemm picks for each matrix shape.
    let parts = trainer::micro_loss(&model, &mb, &cfg, None).unwrap();
    let (dpo, chosen, rejected) = (
        parts.dpo_loss.unwrap(),
        parts.reward_chosen.unwrap(),
        parts.reward_rejected.unwrap(),
    );
    assert!((dpo - std::f64::consts::LN_2).abs() < 1e-6, "{dpo}");
    assert!(
        chosen.abs() < 1e-6 && rejected.abs() < 1e-6,
        "{chosen} {rejected}"
    );
    // With the reference taken on the same batch the identity is exact.
    let off = model.log_probs(&mb.batch, &mut Adapter::Off).unwrap();
    let row_sum = |t: &Tensor, (s, c): (usize, usize)| {
        t.narrow(0, s, c)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let same_batch: Vec<f32> = mb.spans[..2 * mb.pairs]
        .iter()
        .map(|&sp| row_sum(&off, sp))
        .collect();
    let exact = MicroBatch {
        reference: same_batch,
        ..mb
    };
    let parts = trainer::micro_loss(&model, &exact, &cfg, None).unwrap();
    assert_eq!(parts.dpo_loss, Some(2f32.ln() as f64));
    assert_eq!(parts.reward_chosen, Some(0.0));
    assert_eq!(parts.reward_rejected, Some(0.0));
    assert_eq!(parts.reward_accuracy, Some(0.0));
    // The adapter-off forward is the same function.
    let batch = TokenBatch::new(&[(&[5u32, 6, 7, 8][..], &[false, true, true, true][..])], 0);
    let on = model
        .log_probs(&batch, &mut Adapter::On(None))
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let off = model
        .log_probs(&batch, &mut Adapter::Off)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(on, off);
}

#[test]
fn chat_template_labels_exactly_the_assistant_turns() {
    let dir = tempfile::tempdir().unwrap();
    let base = Base::load(&tiny_model(dir.path())).unwrap();
    let messages: Vec<demorecon_llm::Message> = serde_json::from_value(serde_json::json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Ciao"}
    ]))
    .unwrap();
    let encoder: &ChatEncoder = &base.encoder;
    let seq = encoder.encode(&messages, 0).unwrap();
    let labelled: Vec<u32> = seq
        .ids
        .iter()
        .zip(&seq.labels)
        .filter(|(_, l)| **l)
        .map(|(&id, _)| id)
        .collect();
    assert_eq!(
        encoder.tokenizer.decode(&labelled),
        "Hello\nCiao\n",
        "content, <|im_end|> (not text) and the newline of each assistant turn"
    );
    let im_end = encoder.tokenizer.id_of("<|im_end|>").unwrap();
    assert_eq!(labelled.iter().filter(|&&id| id == im_end).count(), 2);
    // Only the turns from index 3 on.
    let seq = encoder.encode(&messages, 3).unwrap();
    assert_eq!(seq.labelled(), "Ciao".len() + 2);
    let full = encoder.tokenizer.encode(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nCiao<|im_end|>\n",
    );
    assert_eq!(seq.ids, full.unwrap());
}

fn options(dir: &Path, base: PathBuf, prefs: PathBuf, out: &str) -> RunOptions {
    RunOptions {
        dpo: vec![prefs],
        sft: Vec::new(),
        kto: Vec::new(),
        run: None,
        base,
        out: dir.join(out),
        lora: lora(8, &[Target::Q, Target::K, Target::V, Target::O], 0.0),
        train: TrainConfig {
            lr: 1e-2,
            epochs: 8,
            batch_size: 4,
            warmup_steps: 2,
            seed: 1,
            ..TrainConfig::default()
        },
        max_length: 128,
        resume: false,
        ref_cache: Some(dir.join("refcache.jsonl")),
        merged_gguf: true,
        export_hf: None,
    }
}

#[test]
fn a_tiny_preference_set_is_learned_and_the_merged_gguf_matches() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = tiny_model(dir.path());
    let prefs = dir.path().join("prefs.jsonl");
    write_prefs(&prefs, 8);
    let mut opts = options(dir.path(), base_path.clone(), prefs.clone(), "run");
    opts.lora.targets = Target::ALL.to_vec();
    opts.train.epochs = 30;
    let report = demorecon_train::run(&opts, &mut |_| {}).unwrap();
    assert_eq!(report.pairs, 8);
    assert_eq!(report.reference_computed, 16);
    let metrics = &report.outcome.metrics;
    assert_eq!(metrics.len(), 60);
    let first = &metrics[0];
    let last = metrics.last().unwrap();
    assert!((first.dpo_loss.unwrap() - std::f64::consts::LN_2).abs() < 1e-6);
    assert_eq!(last.reward_accuracy, Some(1.0), "{last:?}");
    assert!(
        last.reward_margin.unwrap() > first.reward_margin.unwrap() + 1.0,
        "{metrics:?}"
    );
    assert!(last.loss < first.loss / 2.0, "{metrics:?}");
    let lines = std::fs::read_to_string(opts.out.join("metrics.jsonl")).unwrap();
    let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
        lines.lines().next().unwrap(),
    )
    .unwrap()
    .keys()
    .cloned()
    .collect();
    assert_eq!(
        keys,
        [
            "step",
            "loss",
            "dpo_loss",
            "nll",
            "reward_chosen",
            "reward_rejected",
            "reward_margin",
            "reward_accuracy",
            "lr",
            "tokens_per_s"
        ]
    );

    // A second run reuses every reference value.
    let again = RunOptions {
        out: dir.path().join("run2"),
        ..opts.clone()
    };
    let report2 = demorecon_train::run(
        &RunOptions {
            train: TrainConfig {
                epochs: 1,
                ..again.train.clone()
            },
            ..again
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        (report2.reference_reused, report2.reference_computed),
        (16, 0)
    );

    // The merged GGUF, loaded by the embedded backend, answers with the trained model's logits,
    // and greedy decoding of a training prompt ends with the chosen phrase.
    let merged = report.merged_gguf.unwrap();
    let embedded = demorecon_embedded::EmbeddedChat::load(
        &merged,
        &demorecon_embedded::LoadOptions {
            max_context: Some(256),
            max_batch: 1,
            prefix_slots: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let base = Base::load(&base_path).unwrap();
    let model = TrainLlama::new(base.config.clone(), &base.weights, opts.lora.clone(), 0).unwrap();
    let (pairs, scale) =
        export::read_peft_adapter(&opts.out.join("adapter"), &base.config).unwrap();
    assert_eq!(scale, opts.lora.scale());
    let vars = model.lora_vars();
    assert_eq!(vars.len(), 2 * pairs.len());
    for (p, chunk) in pairs.iter().zip(vars.chunks(2)) {
        chunk[0].1.set(&p.a).unwrap();
        chunk[1].1.set(&p.b).unwrap();
    }
    let ids: Vec<u32> = base
        .encoder
        .tokenizer
        .encode("<|im_start|>user\nTell me about salt.<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    let batch = TokenBatch::new(&[(&ids[..], &vec![false; ids.len()][..])], 0);
    let ours = model
        .logits(&batch, &mut Adapter::On(None))
        .unwrap()
        .get(ids.len() - 1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let theirs = {
        use demorecon_embedded::backend::Backend;
        use demorecon_embedded::llama::{ContextSize, LlamaEngine, load_model};
        let model = load_model(&merged).unwrap();
        let mut engine = LlamaEngine::new(
            &model,
            ContextSize {
                slots: 1,
                slot_context: 256,
                max_tokens_per_call: ids.len(),
                threads: 2,
                // The reference computes in f32; llama.cpp's default f16 KV rounds by ~1e-2.
                kv_f32: true,
            },
        )
        .unwrap();
        let mut logits = Vec::new();
        engine.prefill(0, 0, &ids, Some(&mut logits)).unwrap();
        logits
    };
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-3, "merged GGUF logits differ by {worst}");
    let req = demorecon_llm::ChatRequest {
        messages: vec![demorecon_llm::Message::user("Tell me about salt.")],
        sampling: demorecon_llm::Sampling {
            temperature: 0.0,
            max_tokens: 40,
            ..Default::default()
        },
        response_format: Default::default(),
        prompt_version: None,
    };
    let answer = embedded.generate_blocking(&req, &mut |_| {}).unwrap().text;
    assert!(answer.ends_with("OK!"), "{answer:?}");
}

#[test]
fn a_resumed_run_ends_with_the_same_adapter_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = tiny_model(dir.path());
    let prefs = dir.path().join("prefs.jsonl");
    write_prefs(&prefs, 6);
    let mut opts = options(dir.path(), base_path, prefs, "straight");
    opts.lora.dropout = 0.1;
    opts.train.epochs = 3;
    opts.train.batch_size = 2;
    opts.train.grad_accum = 2;
    opts.train.save_steps = 2;
    opts.merged_gguf = false;
    let straight = demorecon_train::run(&opts, &mut |_| {}).unwrap();
    assert_eq!(straight.outcome.total_steps, 6);

    let mut interrupted = opts.clone();
    interrupted.out = dir.path().join("resumed");
    interrupted.train.stop_after = Some(3);
    let first = demorecon_train::run(&interrupted, &mut |_| {}).unwrap();
    assert!(!first.outcome.finished);
    assert!(first.adapter_dir.is_none());
    interrupted.train.stop_after = None;
    interrupted.resume = true;
    let second = demorecon_train::run(&interrupted, &mut |_| {}).unwrap();
    assert_eq!(second.outcome.resumed_from, 2);
    assert!(second.outcome.finished);

    let read = |run: &str| adapter_bytes(dir.path(), run);
    assert!(read("straight") == read("resumed"), "adapters differ");
    // The metrics of steps before the checkpoint come back from metrics.jsonl (decimal text,
    // so equal to ~1e-15); every figure but the speed matches.
    let figures = |m: &trainer::StepMetrics| {
        [
            Some(m.step as f64),
            Some(m.loss),
            m.dpo_loss,
            m.nll,
            m.reward_chosen,
            m.reward_rejected,
            m.reward_margin,
            m.reward_accuracy,
            Some(m.lr),
        ]
    };
    assert_eq!(straight.outcome.metrics.len(), second.outcome.metrics.len());
    for (a, b) in straight.outcome.metrics.iter().zip(&second.outcome.metrics) {
        for (x, y) in figures(a).into_iter().zip(figures(b)) {
            let (x, y) = (x.unwrap(), y.unwrap());
            assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0), "{a:?}\n{b:?}");
        }
    }

    // Other settings refuse the checkpoint.
    interrupted.train.lr *= 2.0;
    let err = demorecon_train::run(&interrupted, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err:#}");
}

/// The one test on the real SmolLM2-135M: its chat template labels a row of
/// `examples/prefs.jsonl` as TRL would, and one SFT+DPO step on it starts at DPO = ln 2 and
/// lowers the loss.
#[test]
fn smollm2_labels_and_one_step_on_the_example_preferences() {
    let path =
        demorecon_gguf::ensure_model(&demorecon_llm::home::data_home()).expect("the default model");
    let base = Base::load(&path).unwrap();
    let prefs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/prefs.jsonl");
    let rows =
        demorecon_train::data::read_jsonl(&prefs, demorecon_train::data::parse_pair).unwrap();
    assert_eq!(rows.len(), 24);
    let (examples, report) =
        demorecon_train::data::tokenize(&base.encoder, &rows[..1], 1024, Mode::SftDpo).unwrap();
    assert_eq!(report.sequences_truncated, 0);
    let Example::Pair { chosen, rejected } = &examples[0] else {
        panic!("not a pair")
    };
    let decode_labelled = |s: &Sequence| {
        let ids: Vec<u32> = s
            .ids
            .iter()
            .zip(&s.labels)
            .filter(|(_, l)| **l)
            .map(|(&id, _)| id)
            .collect();
        base.encoder.tokenizer.decode(&ids)
    };
    // `<|im_end|>` is labelled but decodes to nothing; the newline after it is labelled too.
    assert_eq!(
        decode_labelled(chosen),
        "The capital of France is Paris. Stay curious!\n"
    );
    assert_eq!(
        decode_labelled(rejected),
        "The capital of France is Paris.\n"
    );
    // The template's default system prompt comes first; `<|im_start|>system` is [1, 9690].
    assert_eq!(&chosen.ids[..2], &[1, 9690]);
    let shared = chosen
        .ids
        .iter()
        .zip(&rejected.ids)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(shared >= chosen.labels.iter().position(|&l| l).unwrap());

    let spec = lora(8, &[Target::Q, Target::K, Target::V, Target::O], 0.0);
    let model = TrainLlama::new(base.config.clone(), &base.weights, spec, 0).unwrap();
    let mut cache = RefCache::in_memory();
    let refs = trainer::reference_logps(&model, &examples, &base.key, &mut cache, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        lr: 1e-3,
        epochs: 2,
        batch_size: 1,
        save_steps: 0,
        ..TrainConfig::default()
    };
    let outcome = trainer::train(&model, &examples, &refs, &cfg, dir.path(), false, "t").unwrap();
    let [first, second] = &outcome.metrics[..] else {
        panic!("{:?}", outcome.metrics)
    };
    assert!(
        (first.dpo_loss.unwrap() - std::f64::consts::LN_2).abs() < 1e-5,
        "{first:?}"
    );
    assert!(second.loss < first.loss, "{first:?} {second:?}");
    assert!(second.reward_margin.unwrap() > 0.0, "{second:?}");
}

/// Unpaired rows over random tokens: each with a mismatched partner sharing its prompt.
fn random_kto_examples(vocab: u32, seed: u64) -> Vec<Example> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut examples = Vec::new();
    for (i, len) in [12usize, 9, 14, 10].into_iter().enumerate() {
        let seq = random_seq(&mut rng, len, 4, vocab);
        let mut kl = random_seq(&mut rng, 11, 4, vocab);
        kl.ids[..4].copy_from_slice(&seq.ids[..4]);
        examples.push(Example::Kto {
            seq,
            kl,
            desirable: i % 2 == 0,
        });
    }
    examples.push(Example::Sft(random_seq(&mut rng, 11, 3, vocab)));
    examples
}

#[test]
fn kto_starts_at_one_half_and_its_gradients_match_finite_differences() {
    // At initialisation the policy is the reference: every log-ratio and the reference point
    // are 0, so each row costs 1 − σ(0) = ½.
    let fresh = random_model(&[Target::Q, Target::V], 6);
    let examples = random_kto_examples(64, 12);
    let mut cache = RefCache::in_memory();
    let refs = trainer::reference_logps(&fresh, &examples, &key(), &mut cache, false).unwrap();
    let picked: Vec<&Example> = examples.iter().collect();
    let mb = MicroBatch::new(&picked, &refs).unwrap();
    let kto = mb.kto.as_ref().expect("a KTO micro-batch");
    assert_eq!(kto.desirable, [true, false, true, false]);
    let cfg = TrainConfig {
        mode: Mode::Kto,
        ..TrainConfig::default()
    };
    let parts = trainer::micro_loss(&fresh, &mb, &cfg, None).unwrap();
    assert!(
        (parts.kto_loss.unwrap() - 0.5).abs() < 1e-6,
        "{:?}",
        parts.kto_loss
    );
    assert!(parts.kl.unwrap() < 1e-5, "{:?}", parts.kl);
    assert!(parts.nll.is_none() && parts.dpo_loss.is_none());

    // Gradients of sft+kto with unequal weights, the reference point held fixed (it is not
    // differentiated), against central differences.
    let model = random_model(
        &[Target::Q, Target::K, Target::V, Target::O, Target::Down],
        7,
    );
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for (name, var) in model.lora_vars() {
        if name.ends_with("lora_B") {
            let values: Vec<f32> = (0..var.elem_count())
                .map(|_| rng.random_range(-0.1..0.1))
                .collect();
            var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let mut cache = RefCache::in_memory();
    let refs = trainer::reference_logps(&model, &examples, &key(), &mut cache, false).unwrap();
    let mb = MicroBatch::new(&picked, &refs).unwrap();
    let kto = mb.kto.as_ref().unwrap();
    let kl = trainer::reference_point(&model, kto).unwrap();
    let loss = || {
        let logp = model.log_probs(&mb.batch, &mut Adapter::On(None)).unwrap();
        let inputs = KtoInputs {
            desirable: &kto.desirable,
            reference: &mb.reference,
            kl,
            desirable_weight: 1.0,
            undesirable_weight: 1.5,
        };
        kto_loss(&logp, &mb.spans, &inputs, Mode::SftKto, 0.5, 0.7).unwrap()
    };
    let parts = loss();
    assert!(parts.nll.is_some() && parts.kto_loss.is_some());
    let grads = parts.loss.backward().unwrap();
    let mut checked = 0;
    for (name, var) in &model.lora_vars() {
        let g: Vec<f32> = grads
            .get(var)
            .unwrap_or_else(|| panic!("{name} got no gradient"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        if !["layers.0.self_attn.q_proj", "layers.1.mlp.down_proj"]
            .iter()
            .any(|p| name.contains(p))
        {
            continue;
        }
        assert_central_difference(name, var, &g, || {
            loss().loss.to_scalar::<f32>().unwrap() as f64
        });
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn a_tiny_set_unpaired_for_kto_is_learned_and_resumes_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = tiny_model(dir.path());
    let prefs = dir.path().join("prefs.jsonl");
    write_prefs(&prefs, 6);
    let mut opts = options(dir.path(), base_path, prefs, "kto");
    opts.train.mode = Mode::Kto;
    opts.train.epochs = 12;
    opts.train.save_steps = 5;
    opts.merged_gguf = false;
    let report = demorecon_train::run(&opts, &mut |_| {}).unwrap();
    // Six pairs, unpaired: six desirable and six undesirable rows, each with a reference
    // value for itself and for its mismatched partner.
    assert_eq!((report.pairs, report.kto_rows), (0, 12));
    assert_eq!(report.reference_computed, 24);
    let metrics = &report.outcome.metrics;
    let (first, last) = (&metrics[0], metrics.last().unwrap());
    assert!((first.kto_loss.unwrap() - 0.5).abs() < 1e-3, "{first:?}");
    assert!(last.kto_loss.unwrap() < 0.4, "{last:?}");
    assert!(
        last.reward_chosen.unwrap() > last.reward_rejected.unwrap() + 0.5,
        "{last:?}"
    );
    assert!(last.kl.is_some() && first.dpo_loss.is_none());

    let mut interrupted = opts.clone();
    interrupted.out = dir.path().join("kto-resumed");
    interrupted.train.stop_after = Some(7);
    assert!(
        !demorecon_train::run(&interrupted, &mut |_| {})
            .unwrap()
            .outcome
            .finished
    );
    interrupted.train.stop_after = None;
    interrupted.resume = true;
    let resumed = demorecon_train::run(&interrupted, &mut |_| {}).unwrap();
    assert_eq!(resumed.outcome.resumed_from, 5);
    let read = |run: &str| adapter_bytes(dir.path(), run);
    assert!(read("kto") == read("kto-resumed"), "adapters differ");

    // TRL's unpaired file trains too; KTO rows are refused outside the KTO modes.
    let kto_file = dir.path().join("kto.jsonl");
    let rows: String = ["salt", "wind", "snow"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"prompt": format!("Tell me about {t}."),
                "completion": format!("{t} matter. OK!"), "label": i != 1})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&kto_file, rows).unwrap();
    let mut from_file = opts.clone();
    from_file.out = dir.path().join("kto-file");
    from_file.dpo.clear();
    from_file.kto = vec![kto_file];
    from_file.train.mode = Mode::SftKto;
    from_file.train.epochs = 1;
    let report = demorecon_train::run(&from_file, &mut |_| {}).unwrap();
    assert_eq!(report.kto_rows, 3);
    assert!(report.outcome.metrics[0].nll.is_some());
    from_file.train.mode = Mode::Dpo;
    let err = demorecon_train::run(&from_file, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("--mode kto or sft+kto"), "{err:#}");
}

#[test]
fn eval_split_max_steps_warmup_ratio_and_early_stop() {
    let dir = tempfile::tempdir().unwrap();
    let base_path = tiny_model(dir.path());
    let prefs = dir.path().join("prefs.jsonl");
    write_prefs(&prefs, 10);
    let mut opts = options(dir.path(), base_path, prefs, "eval");
    opts.merged_gguf = false;
    opts.train.batch_size = 2;
    opts.train.epochs = 4;
    opts.train.eval_split = Some(EvalSplit::Count(2));
    opts.train.max_steps = Some(13);
    opts.train.warmup_steps = 0;
    opts.train.warmup_ratio = Some(0.25);
    let report = demorecon_train::run(&opts, &mut |_| {}).unwrap();
    // Eight pairs train (4 steps an epoch), so 16 steps, capped at 13; evaluations once an
    // epoch and at the end; warm-up over ceil(0.25 · 13) = 4 steps.
    let m = &report.outcome.metrics;
    assert_eq!(report.outcome.total_steps, 13);
    let evaluated: Vec<usize> = m
        .iter()
        .filter(|x| x.eval_loss.is_some())
        .map(|x| x.step)
        .collect();
    assert_eq!(evaluated, [4, 8, 12, 13]);
    assert!(m[3].lr > m[2].lr && m[4].lr < m[3].lr, "{m:?}");
    assert!((m[3].lr - opts.train.lr).abs() < 1e-12);
    assert!(m[12].eval_reward_accuracy.is_some());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(opts.out.join("train_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["train"]["eval_split"], 2);
    assert_eq!(config["dpo"][0]["rows"], 10);

    // A knob the fingerprint covers refuses a checkpoint made without it.
    let mut other = opts.clone();
    other.resume = true;
    other.train.warmup_ratio = Some(0.5);
    let err = demorecon_train::run(&other, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err:#}");

    // A learning rate far too high makes the eval loss worsen: early stopping ends the run
    // and keeps the adapter of the best evaluation.
    let mut wild = opts.clone();
    wild.out = dir.path().join("wild");
    wild.train.lr = 3.0;
    wild.train.warmup_ratio = None;
    wild.train.max_steps = None;
    wild.train.epochs = 30;
    wild.train.eval_steps = Some(1);
    wild.train.early_stop_patience = Some(2);
    let report = demorecon_train::run(&wild, &mut |_| {}).unwrap();
    let stopped = report.outcome.stopped_early.expect("stopped early");
    let best = report.outcome.best_step.unwrap();
    assert_eq!(stopped, best + 2, "two evaluations without improvement");
    assert!(report.outcome.finished && stopped < report.outcome.total_steps);
    let losses: Vec<f64> = report
        .outcome
        .metrics
        .iter()
        .filter_map(|m| m.eval_loss)
        .collect();
    let best_loss = report.outcome.metrics[best - 1].eval_loss.unwrap();
    assert!(losses.iter().all(|&l| l >= best_loss));
    let kept = candle_core::safetensors::load(
        wild.out.join("adapter/adapter_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let saved =
        candle_core::safetensors::load(wild.out.join("best-adapter.safetensors"), &Device::Cpu)
            .unwrap();
    let sum = |m: &std::collections::HashMap<String, Tensor>| -> f64 {
        m.values()
            .map(|t| {
                t.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
            })
            .sum()
    };
    assert!(
        (sum(&kept) - sum(&saved)).abs() < 1e-3 * sum(&saved),
        "the best adapter is exported"
    );
    // Resuming a run that stopped early stops again at once, with the same adapter.
    let again = demorecon_train::run(
        &RunOptions {
            resume: true,
            ..wild.clone()
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(again.outcome.stopped_early, Some(stopped));
    assert_eq!(again.outcome.steps_done, stopped);
}
