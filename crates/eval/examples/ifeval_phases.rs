//! Where the time of `demorecon eval ifeval` goes, phase by phase, in one process: the first
//! call into Punkt, Treebank and language id (their tables are laid out at build time, so
//! what remains is first-touch cost), reading, scoring on one thread (cold, then warm per
//! instruction id, so the figures are CPU time) and writing. A profiling aid, not a
//! benchmark of record (that is `scripts/bench-ifeval.sh`).
//!
//! `cargo run --release -p demorecon-eval --example ifeval_phases -- INPUT RESPONSES OUT_DIR`

use std::path::Path;
use std::time::Instant;

use demorecon_checks::{langid, punkt, treebank};
use demorecon_eval::ifeval;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, responses, out] = &args[..] else {
        eprintln!("usage: ifeval_phases INPUT RESPONSES OUT_DIR");
        std::process::exit(2);
    };
    let t = Instant::now();
    let lap = |name: &str, t: &mut Instant| {
        // Resident memory after the phase, split as the kernel reports it (Linux only).
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rss: Vec<&str> = status
            .lines()
            .filter(|l| {
                l.starts_with("RssAnon") || l.starts_with("RssFile") || l.starts_with("VmHWM")
            })
            .map(|l| l.split_whitespace().nth(1).unwrap_or("?"))
            .collect();
        eprintln!(
            "{name:<28} {:>8.2} ms   peak/anon/file KB {rss:?}",
            t.elapsed().as_secs_f64() * 1e3
        );
        *t = Instant::now();
    };
    let mut t0 = t;
    punkt::count_sentences("Warm up. Punkt.");
    lap("punkt first split", &mut t0);
    treebank::word_tokenize("Warm up the \"Treebank\" rules, don't you?");
    lap("treebank first tokenize", &mut t0);
    let _ = langid::detect("Warm up the language profiles.");
    lap("langid first detect", &mut t0);
    let inputs = ifeval::read_inputs(Path::new(input)).unwrap();
    let rows = ifeval::read_responses(Path::new(responses)).unwrap();
    let texts = ifeval::join_responses(&inputs, &rows).unwrap();
    lap("read + join", &mut t0);
    let mut n = 0;
    for (row, text) in inputs.iter().zip(&texts) {
        let cs = ifeval::constraints_for(row).unwrap();
        let (s, l) = ifeval::score_row(&cs, text);
        n += s.len() + l.len();
    }
    lap("score (one thread, cold)", &mut t0);
    // Per instruction id: time of its strict check and loose re-checks, as score_row runs them.
    let mut per_id: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
    for (row, text) in inputs.iter().zip(&texts) {
        let variants = ifeval::loose_variants(text);
        for c in ifeval::constraints_for(row).unwrap() {
            let t = Instant::now();
            if !c.check(text) {
                for v in &variants[1..] {
                    if c.check(v) {
                        break;
                    }
                }
            }
            let e = per_id.entry(c.id()).or_default();
            e.0 += t.elapsed().as_secs_f64() * 1e3;
            e.1 += 1;
        }
    }
    let mut ids: Vec<_> = per_id.into_iter().collect();
    ids.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    for (id, (ms, n)) in ids.iter().take(12) {
        eprintln!("  {id:<45} {ms:>7.2} ms over {n}");
    }
    lap("per-id breakdown", &mut t0);
    let ev = ifeval::evaluate(&inputs, &texts, Default::default()).unwrap();
    lap("evaluate (parallel, warm)", &mut t0);
    ifeval::write_outputs(Path::new(out), &ev).unwrap();
    lap("write outputs", &mut t0);
    eprintln!(
        "{n} verdicts, {:.2} ms in all",
        t.elapsed().as_secs_f64() * 1e3
    );
}
