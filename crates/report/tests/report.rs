//! The report end to end: fixture eval, run and training folders written the way the real
//! commands write them, rendered, and checked for every table and chart, sane statistics,
//! byte-stable output and clear errors; then the page opened in headless Chromium (skipped,
//! with the reason printed, when `chromium` is not installed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use demorecon_eval::record::{Headline, ItemRecord, ModelInfo, Summary, write_eval_dir};
use demorecon_report::{PairMode, Report, ReportError, ReportOptions, build_report};
use serde_json::json;

/// A tiny deterministic generator for fixture scores.
struct Lcg(u64);

impl Lcg {
    fn chance(&mut self, p: f64) -> bool {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

fn model(name: &str) -> ModelInfo {
    ModelInfo {
        spec: Some(format!("{name}@http://127.0.0.1:9/v1")),
        kind: "openai".into(),
        model: name.into(),
        ..Default::default()
    }
}

fn write_ifeval(dir: &Path, name: &str, skill: f64, seed: u64) {
    let mut rng = Lcg(seed);
    let items: Vec<ItemRecord> = (0..80)
        .map(|i| {
            let n = 1 + i % 3;
            let passed = (0..n).filter(|_| rng.chance(skill)).count();
            let all = f64::from(u8::from(passed == n));
            let loose = passed.max(usize::from(rng.chance(0.3)) * n);
            ItemRecord {
                id: format!("ifeval-{i}"),
                prompt: format!("Write {i} words."),
                response: "ok".into(),
                decided_by: "code:length".into(),
                scores: [
                    ("prompt_strict".to_owned(), [all, 1.0]),
                    ("inst_strict".to_owned(), [passed as f64, n as f64]),
                    (
                        "prompt_loose".to_owned(),
                        [f64::from(u8::from(loose == n)), 1.0],
                    ),
                    ("inst_loose".to_owned(), [loose as f64, n as f64]),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            }
        })
        .collect();
    let headline = [
        ("prompt_strict", "Prompt-level strict"),
        ("inst_strict", "Instruction-level strict"),
        ("prompt_loose", "Prompt-level loose"),
        ("inst_loose", "Instruction-level loose"),
    ]
    .iter()
    .map(|(k, l)| Headline::ratio(k, l, &items))
    .collect();
    let mut summary = Summary::new(
        "ifeval",
        items.len(),
        headline,
        json!({"by_instruction": {"length_constraints:number_words": [12, 20]}}),
    );
    summary.model = Some(model(name));
    std::fs::create_dir_all(dir).unwrap();
    write_eval_dir(dir, &summary, &items).unwrap();
}

fn write_fgiv(dir: &Path, name: &str, skill: f64, seed: u64) {
    let mut rng = Lcg(seed);
    let items: Vec<ItemRecord> = (0..120)
        .map(|i| {
            let detect_key = if i % 2 == 0 {
                "detection_yes"
            } else {
                "detection_no"
            };
            let pass = f64::from(u8::from(rng.chance(skill)));
            let detect = f64::from(u8::from(rng.chance(skill)));
            ItemRecord {
                id: format!("fgiv-{i}"),
                prompt: "p".into(),
                response: "r".into(),
                judge_raw: vec!["Yes".into()],
                decided_by: "judge".into(),
                scores: [
                    ("pass_rate".to_owned(), [pass, 1.0]),
                    (detect_key.to_owned(), [detect, 1.0]),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            }
        })
        .collect();
    let pass = Headline::ratio("pass_rate", "FGIV pass rate", &items);
    let yes = Headline::ratio("detection_yes", "Detection accuracy (Yes)", &items);
    let no = Headline::ratio("detection_no", "Detection accuracy (No)", &items);
    let bal = Headline::mean(
        "detection_balanced",
        "Detection balanced accuracy",
        &[&yes, &no],
    );
    let mut summary = Summary::new("fgiv", items.len(), vec![pass, yes, no, bal], json!({}));
    summary.model = Some(model(name));
    summary.judge = Some(ModelInfo {
        kind: "embedded".into(),
        model: "judge-model".into(),
        prompt_version: Some("fgiv-judge/1".into()),
        ..Default::default()
    });
    std::fs::create_dir_all(dir).unwrap();
    write_eval_dir(dir, &summary, &items).unwrap();
}

/// FollowBench-like: ten metrics (HSR and SSR per level), so its bars take two charts.
fn write_followbench(dir: &Path, name: &str, seed: u64) {
    let mut rng = Lcg(seed);
    let items: Vec<ItemRecord> = (0..100)
        .map(|i| {
            let level = 1 + i % 5;
            let n = level as f64;
            let met = (0..level).filter(|_| rng.chance(0.9 - 0.1 * n)).count() as f64;
            ItemRecord {
                id: format!("fb-{i}"),
                decided_by: "judge".into(),
                scores: [
                    (
                        format!("hsr_l{level}"),
                        [f64::from(u8::from(met == n)), 1.0],
                    ),
                    (format!("ssr_l{level}"), [met, n]),
                ]
                .into_iter()
                .collect(),
                extra: [("level".to_owned(), json!(level))].into_iter().collect(),
                ..Default::default()
            }
        })
        .collect();
    let headline = (1..=5)
        .map(|l| Headline::ratio(&format!("hsr_l{l}"), &format!("HSR level {l}"), &items))
        .chain(
            (1..=5)
                .map(|l| Headline::ratio(&format!("ssr_l{l}"), &format!("SSR level {l}"), &items)),
        )
        .collect();
    let mut summary = Summary::new("followbench", items.len(), headline, json!({}));
    summary.model = Some(model(name));
    std::fs::create_dir_all(dir).unwrap();
    write_eval_dir(dir, &summary, &items).unwrap();
}

fn write_run(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let manifest = json!({
        "tool": {"name": "demorecon", "version": "0.1.0"},
        "command": ["demorecon", "run", "seeds.jsonl", "-o", "run"],
        "input": {"seeds": "seeds.jsonl", "seeds_blake3": "ab12"},
        "shard": null,
        "options": {"variants_per_seed": 3},
        "build": {"eval_seeds": 10, "split_seed": 0, "shard": null},
        "prompts": {"filter": "filter/1"},
        "models": {"filter": {"kind": "openai", "model": "gpt"}},
        "counts": {
            "seeds_in": 200, "seeds_unreadable": 0, "seeds_filtered_out": 40,
            "seeds_quarantined": 6, "seeds_done": 150, "seeds_pending": 4,
            "variants": 450, "variants_valid": 380, "variants_invalid": 60,
            "variants_quarantined": 10, "variants_pending": 0, "variants_rewrite_flagged": 12,
            "seed_responses_given": 0, "seed_responses_generated": 150,
            "responses_fgiv_a": 380, "responses_fgiv_r": 380, "responses_quarantined": 0,
            "verified_by_code": 100, "verified_by_judge": 280, "verify_quarantined": 0,
            "pairs_valid_fgiv_a": 300, "pairs_valid_fgiv_r": 250, "fgiv_eval_seeds": 10,
            "quarantined_by_reason": {"filter/parse": 2, "decompose/parse": 4, "vary/parse": 10}
        },
        "usage_by_stage": {},
        "cost_usd": 1.25,
        "files": {"datasets/fgiv_a.jsonl": 300},
        "this_invocation": {"cache_hits": 0, "cache_misses": 10, "seconds": 3.5}
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

fn write_train(dir: &Path, steps: u64, speed: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::new();
    for s in 1..=steps {
        let t = s as f64 * speed;
        let dpo = 0.693 * (-t).exp() + 0.05;
        let nll = 1.2 - 0.3 * (1.0 - (-t).exp());
        let margin = 2.0 * (1.0 - (-t).exp());
        let row = json!({
            "step": s, "loss": dpo + 0.2 * nll, "dpo_loss": dpo, "nll": nll,
            "reward_chosen": margin / 2.0, "reward_rejected": -margin / 2.0,
            "reward_margin": margin, "reward_accuracy": (0.5 + t / 4.0).min(1.0),
            "lr": 5e-5, "tokens_per_s": 1200.0
        });
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
}

/// Every kind of folder: three models on FGIV (one an identical twin), two on IFEval, one on
/// FollowBench, a run and two training logs.
fn fixtures(root: &Path) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = [
        "eval-base-fgiv",
        "eval-tuned-fgiv",
        "eval-twin-fgiv",
        "eval-base-ifeval",
        "eval-tuned-ifeval",
        "run-main",
        "train-dpo",
        "train-dpo-slow",
        "eval-tuned-followbench",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();
    write_fgiv(&dirs[0], "base-model", 0.45, 1);
    write_fgiv(&dirs[1], "tuned <b>model</b>", 0.8, 2);
    write_fgiv(&dirs[2], "base-twin", 0.45, 1);
    write_ifeval(&dirs[3], "base-model", 0.5, 3);
    write_ifeval(&dirs[4], "tuned <b>model</b>", 0.75, 4);
    write_run(&dirs[5]);
    write_train(&dirs[6], 40, 0.12);
    write_train(&dirs[7], 30, 0.05);
    write_followbench(&dirs[8], "tuned <b>model</b>", 5);
    dirs
}

fn opts() -> ReportOptions {
    ReportOptions {
        resamples: 500,
        ..Default::default()
    }
}

#[test]
fn the_report_has_every_table_and_chart_and_sane_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = fixtures(tmp.path());
    let report = build_report(&dirs, &opts()).unwrap();
    let html = report.html();

    assert_eq!(
        report.models,
        vec!["base-model", "tuned <b>model</b>", "base-twin"]
    );
    assert_eq!(report.benchmarks.len(), 3);
    assert_eq!(html.matches("<svg class=\"chart chart-bars\"").count(), 4);
    assert_eq!(html.matches("<svg class=\"chart chart-funnel\"").count(), 1);
    assert_eq!(html.matches("<svg class=\"chart chart-line\"").count(), 4);
    assert_eq!(html.matches("<table class=\"metrics\"").count(), 3);
    assert_eq!(html.matches("<table class=\"pairs\"").count(), 2);
    assert_eq!(html.matches("<table class=\"train\"").count(), 1);
    for needle in [
        "Detection balanced accuracy",
        "Instruction-level loose",
        "HSR level 5",
        "Only one model was evaluated on this benchmark",
        "verified pairs FGIV-R",
        "Reward accuracy",
        "Reward margin",
        "DPO loss",
        "judge judge-model (fgiv-judge&#x2f;1)",
        "quarantined filter&#x2f;parse",
    ] {
        assert!(html.contains(needle), "missing {needle}");
    }
    // The funnel: 200 seeds, 200 − 40 − 2 kept.
    assert!(html.contains("158  (79% of seeds)"), "funnel labels");
    // Text from the files is escaped, in tables and in charts.
    assert!(!html.contains("<b>model</b>"));
    assert!(html.contains("tuned &lt;b&gt;model&lt;"));
    assert!(!html.contains("<script"));
    assert!(!html.contains(" src=") && !html.contains("<link") && !html.contains("@import"));

    for b in &report.benchmarks {
        for row in &b.metrics {
            for e in row.cells.iter().flatten() {
                let (lo, hi) = e.interval.expect("every fixture metric has items");
                assert!(
                    lo <= e.value && e.value <= hi,
                    "{} {}: {lo} {} {hi}",
                    b.name,
                    row.key,
                    e.value
                );
                assert!(lo >= 0.0 && hi <= 1.0 && hi - lo < 0.5);
            }
        }
    }
    let fgiv = &report.benchmarks[0];
    assert_eq!(fgiv.name, "fgiv");
    assert_eq!(fgiv.pairs.len(), 3 * 4, "three pairs × four metrics");
    // base vs its identical twin: no difference at all.
    for t in fgiv.pairs.iter().filter(|t| (t.a, t.b) == (0, 2)) {
        assert_eq!(t.diff, 0.0);
        assert_eq!(t.interval, Some((0.0, 0.0)));
        assert_eq!(t.p_value, Some(1.0));
        if let Some(m) = t.mcnemar {
            assert_eq!((m.only_a, m.only_b, m.p_value), (0, 0, 1.0));
        }
    }
    // base vs tuned: a large, significant gain in pass rate.
    let gain = fgiv
        .pairs
        .iter()
        .find(|t| (t.a, t.b) == (0, 1) && t.metric_key == "pass_rate")
        .unwrap();
    assert!(gain.diff > 0.2, "{gain:?}");
    let (lo, hi) = gain.interval.unwrap();
    assert!(lo > 0.0 && lo <= gain.diff && gain.diff <= hi);
    assert!(gain.p_value.unwrap() < 0.01);
    let mc = gain.mcnemar.unwrap();
    assert!(mc.only_b > mc.only_a && mc.p_value < 0.01, "{mc:?}");
    let bal = fgiv
        .pairs
        .iter()
        .find(|t| t.metric_key == "detection_balanced")
        .unwrap();
    assert!(
        bal.mcnemar.is_none(),
        "balanced accuracy is not 0/1 per item"
    );
    let ifeval = &report.benchmarks[1];
    let inst = ifeval
        .pairs
        .iter()
        .find(|t| t.metric_key == "inst_strict")
        .unwrap();
    assert!(
        inst.mcnemar.is_none(),
        "instruction-level scores are not 0/1"
    );
    assert!(html.contains("p&lt;0.05"), "significant rows are marked");
}

#[test]
fn the_page_is_byte_stable_and_the_seed_matters() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = fixtures(tmp.path());
    let one = build_report(&dirs, &opts()).unwrap();
    let two = build_report(&dirs, &opts()).unwrap();
    assert_eq!(one.html(), two.html());
    let out = tmp.path().join("report.html");
    one.write(&out).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), two.html());
    let other = ReportOptions { seed: 7, ..opts() };
    assert_ne!(build_report(&dirs, &other).unwrap().html(), one.html());
    let baseline = ReportOptions {
        pairs: PairMode::FirstAsBaseline,
        ..opts()
    };
    let b = build_report(&dirs, &baseline).unwrap();
    assert_eq!(b.benchmarks[0].pairs.len(), 2 * 4);
    assert!(b.benchmarks[0].pairs.iter().all(|t| t.a == 0));
    // The Markdown twin: one table and one paired-test table per benchmark, the same numbers.
    let md = b.markdown();
    assert_eq!(md.matches("#### ").count(), b.benchmarks.len());
    let bench = &b.benchmarks[0];
    let first = bench.metrics[0].cells[0].unwrap();
    assert!(
        md.contains(&format!("{:.1} [", first.value * 100.0)),
        "{md}"
    );
    let vs = format!("| {} vs {} |", bench.models[1].label, bench.models[0].label);
    let expected: usize = b
        .benchmarks
        .iter()
        .map(|bb| {
            bb.pairs
                .iter()
                .filter(|p| {
                    bb.models[p.b].label == bench.models[1].label
                        && bb.models[p.a].label == bench.models[0].label
                })
                .count()
        })
        .sum();
    assert!(expected > 0);
    assert_eq!(md.matches(&vs).count(), expected, "{md}");
}

#[test]
fn only_some_kinds_of_folder_still_make_a_page() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = fixtures(tmp.path());
    let r = build_report(&dirs[5..6], &opts()).unwrap();
    assert!(r.html().contains("chart-funnel") && !r.html().contains("chart-bars"));
    let r = build_report(&[dirs[3].clone()], &opts()).unwrap();
    assert!(r.html().contains("Only one model was evaluated"));
    let sft = tmp.path().join("train-sft");
    std::fs::create_dir_all(&sft).unwrap();
    std::fs::write(
        sft.join("metrics.jsonl"),
        "{\"step\":1,\"loss\":1.5,\"dpo_loss\":null,\"lr\":1e-4,\"tokens_per_s\":10}\n\
         {\"step\":2,\"loss\":null,\"lr\":1e-4,\"tokens_per_s\":10}\n",
    )
    .unwrap();
    let r = build_report(&[sft], &opts()).unwrap();
    assert_eq!(r.html().matches("chart-line\"").count(), 1);
    assert!(
        r.html()
            .contains("Not in these logs: DPO loss, Reward accuracy, Reward margin")
    );
}

#[test]
fn unknown_folders_and_bad_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let stray = tmp.path().join("holiday-photos");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("beach.jpg"), b"x").unwrap();
    let err = build_report(&[stray], &opts()).unwrap_err();
    assert!(matches!(err, ReportError::Unrecognised { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("holiday-photos")
            && msg.contains("summary.json")
            && msg.contains("metrics.jsonl"),
        "{msg}"
    );
    let bad = tmp.path().join("bad-eval");
    write_fgiv(&bad, "m", 0.5, 1);
    let items = bad.join("items.jsonl");
    let mut text = std::fs::read_to_string(&items).unwrap();
    text.push_str("{not json\n");
    std::fs::write(&items, text).unwrap();
    let msg = build_report(&[bad], &opts()).unwrap_err().to_string();
    assert!(msg.contains("items.jsonl:121"), "{msg}");
    let empty: [PathBuf; 0] = [];
    assert!(matches!(
        build_report(&empty, &opts()),
        Err(ReportError::NoInputs)
    ));
}

// ---- headless Chromium ----

/// Runs `cmd` for at most `limit`, returning (stdout, stderr) or why it failed.
fn run_with_limit(mut cmd: Command, limit: Duration) -> Result<(String, String), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    if !status.success() {
        return Err(format!("{status}: {stderr}"));
    }
    Ok((stdout, stderr))
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

fn chromium_cmd(bin: &Path, profile: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--window-size=1280,2000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// The share of pixels that are not near-white, the number of distinct colours, and how many
/// pixels are close to each of `wanted`.
fn png_stats(path: &Path, wanted: &[(u8, u8, u8)]) -> (f64, usize, Vec<usize>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels = &buf[..info.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    let mut inked = 0usize;
    let mut hits = vec![0usize; wanted.len()];
    let total = pixels.len() / channels;
    for px in pixels.chunks(channels) {
        let (r, g, b) = (px[0], px[1], px[2]);
        colours.insert((r, g, b));
        if r.min(g).min(b) < 235 {
            inked += 1;
        }
        for (hit, w) in hits.iter_mut().zip(wanted) {
            let near = |a: u8, b: u8| a.abs_diff(b) <= 8;
            *hit += usize::from(near(r, w.0) && near(g, w.1) && near(b, w.2));
        }
    }
    (inked as f64 / total as f64, colours.len(), hits)
}

fn report_page(dir: &Path) -> (Report, PathBuf) {
    let dirs = fixtures(&dir.join("in"));
    let report = build_report(&dirs, &opts()).unwrap();
    let page = dir.join("report.html");
    report.write(&page).unwrap();
    (report, page)
}

#[test]
fn headless_chromium_renders_the_page_without_console_errors() {
    let Some(bin) = chromium() else {
        eprintln!(
            "SKIPPED headless_chromium_renders_the_page_without_console_errors: `chromium` \
             is not on PATH (apt-get install -y chromium)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_, page) = report_page(tmp.path());
    let url = format!("file://{}", page.display());
    let limit = Duration::from_secs(120);

    let mut dump = chromium_cmd(&bin, &tmp.path().join("profile-dom"));
    dump.args(["--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(&url);
    let (dom, log) = run_with_limit(dump, limit).unwrap();
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(!log.contains("Uncaught"), "{log}");
    assert_eq!(
        dom.matches("<svg class=\"chart chart-bars\"").count(),
        4,
        "bar charts"
    );
    assert_eq!(
        dom.matches("<svg class=\"chart chart-funnel\"").count(),
        1,
        "funnel"
    );
    assert_eq!(
        dom.matches("<svg class=\"chart chart-line\"").count(),
        4,
        "line charts"
    );
    assert_eq!(dom.matches("<table").count(), 6, "tables");

    let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::copy(&page, keep.join("report.html")).unwrap();
    let shot = keep.join("report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let mut cmd = chromium_cmd(&bin, &tmp.path().join("profile-shot"));
    cmd.arg(format!("--screenshot={}", shot.display()))
        .arg(&url);
    run_with_limit(cmd, limit).unwrap();
    // The first three model colours fill the bars of the first chart.
    let palette = &demorecon_report::charts::PALETTE[..3];
    let (inked, colours, hits) = png_stats(&shot, palette);
    eprintln!(
        "screenshot {}: {:.1}% inked, {colours} colours, palette pixels {hits:?}",
        shot.display(),
        inked * 100.0
    );
    assert!(inked > 0.03, "the page looks blank: {inked}");
    assert!(colours > 50, "too few colours: {colours}");
    assert!(hits.iter().all(|&h| h > 2000), "bars not painted: {hits:?}");
}
