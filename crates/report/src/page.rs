//! The page: the report's numbers turned into display strings and charts, poured into one
//! minijinja template (`report.html`, compiled in) with inline CSS. Text from the input files
//! reaches the page only through the template's HTML auto-escaping or [`escape`].
//!
//! Not here: computing numbers (`evals`, `stats`) or drawing (`charts`).

use minijinja::{Environment, context};
use serde::Serialize;

use crate::charts::{self, Bar, BarSeries, LineSeries, Stage};
use crate::evals::{Benchmark, Estimate, PairedTest};
use crate::input::{RunInput, StepRow, TrainInput, folder_name};
use crate::{PairMode, Report, ReportError, ReportOptions};

const TEMPLATE: &str = include_str!("report.html");
/// Most metrics in one bar chart; more are split over several charts.
const BARS_PER_CHART: usize = 8;
/// Longest `details` JSON shown per eval folder.
const DETAILS_MAX: usize = 6000;

/// `text` with `& < > " '` escaped for HTML text and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A fraction as a percentage with one decimal.
fn pct(v: f64) -> String {
    format!("{:.1}", v * 100.0)
}

/// A difference of fractions in percentage points, signed (`+1.2`, `−0.4`, `0.0`).
fn signed_pp(v: f64) -> String {
    let s = format!("{:.1}", (v * 100.0).abs());
    if s == "0.0" {
        s
    } else if v > 0.0 {
        format!("+{s}")
    } else {
        format!("\u{2212}{s}")
    }
}

fn interval(iv: Option<(f64, f64)>, f: fn(f64) -> String) -> String {
    iv.map_or_else(String::new, |(lo, hi)| format!("[{}, {}]", f(lo), f(hi)))
}

fn p_text(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
    }
}

/// A number for a table: up to four significant decimals, no trailing noise.
fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => {
            let digits = if v.abs() >= 100.0 {
                1
            } else if v.abs() >= 1.0 {
                3
            } else {
                4
            };
            format!("{v:.digits$}")
        }
        Some(_) => "NaN".into(),
        None => "—".into(),
    }
}

/// How a benchmark id is written in headings.
fn bench_title(name: &str) -> String {
    match name {
        "ifeval" => "IFEval".into(),
        "fgiv" => "FGIV".into(),
        "infobench" => "InFoBench".into(),
        "followbench" => "FollowBench".into(),
        other => other.to_owned(),
    }
}

#[derive(Serialize)]
struct Legend {
    label: String,
    color: String,
}

#[derive(Serialize)]
struct ModelHead {
    label: String,
    color: String,
    dir: String,
    items: usize,
    unparsed: usize,
    judge: Option<String>,
    details: Option<String>,
}

#[derive(Serialize)]
struct Cell {
    value: String,
    ci: String,
    best: bool,
}

#[derive(Serialize)]
struct Row {
    key: String,
    label: String,
    cells: Vec<Cell>,
}

#[derive(Serialize)]
struct PairRow {
    label: String,
    a: String,
    b: String,
    diff: String,
    ci: String,
    p: String,
    mcnemar: String,
    mcnemar_p: String,
    significant: bool,
}

#[derive(Serialize)]
struct PairGroup {
    a: Legend,
    b: Legend,
    items: usize,
    rows: Vec<PairRow>,
}

#[derive(Serialize)]
struct BenchView {
    id: String,
    title: String,
    charts: Vec<String>,
    models: Vec<ModelHead>,
    rows: Vec<Row>,
    pairs: Vec<PairGroup>,
}

#[derive(Serialize)]
struct RunView {
    name: String,
    path: String,
    chart: String,
    facts: Vec<(String, String)>,
    quarantined: Vec<(String, u64)>,
}

#[derive(Serialize)]
struct ChartView {
    title: String,
    svg: String,
}

#[derive(Serialize)]
struct TrainRow {
    label: String,
    color: String,
    path: String,
    steps: usize,
    last_step: u64,
    loss: String,
    dpo_loss: String,
    reward_accuracy: String,
    reward_margin: String,
    lr: String,
    tokens_per_s: String,
}

#[derive(Serialize)]
struct TrainView {
    legend: Vec<Legend>,
    charts: Vec<ChartView>,
    absent: Vec<String>,
    rows: Vec<TrainRow>,
}

/// Renders `report` as the whole page.
pub fn render(report: &Report, opts: &ReportOptions) -> Result<String, ReportError> {
    let benchmarks = report
        .benchmarks
        .iter()
        .map(bench_view)
        .collect::<Result<Vec<_>, _>>()?;
    let runs = report
        .runs
        .iter()
        .map(run_view)
        .collect::<Result<Vec<_>, _>>()?;
    let train = (!report.trains.is_empty())
        .then(|| train_view(&report.trains))
        .transpose()?;
    let pair_mode = match opts.pairs {
        PairMode::AllPairs => "every pair of models in a benchmark (later folder − earlier folder)",
        PairMode::FirstAsBaseline => "each model against the first folder of its benchmark",
    };
    let mut env = Environment::new();
    env.add_template("report.html", TEMPLATE)
        .map_err(|e| ReportError::Render(e.to_string()))?;
    let tmpl = env
        .get_template("report.html")
        .map_err(|e| ReportError::Render(e.to_string()))?;
    tmpl.render(context! {
        title => opts.title,
        version => env!("CARGO_PKG_VERSION"),
        resamples => opts.resamples,
        seed => opts.seed,
        pair_mode => pair_mode,
        warnings => report.warnings,
        benchmarks => benchmarks,
        runs => runs,
        train => train,
    })
    .map_err(|e| ReportError::Render(e.to_string()))
}

fn legend_of(b: &Benchmark, i: usize) -> Legend {
    Legend {
        label: b.models[i].label.clone(),
        color: charts::color_hex(b.models[i].color),
    }
}

fn bench_view(b: &Benchmark) -> Result<BenchView, ReportError> {
    let title = bench_title(&b.name);
    let charts = chunks(b.metrics.len(), BARS_PER_CHART)
        .into_iter()
        .map(|range| bar_chart(b, &title, range))
        .collect::<Result<Vec<_>, _>>()?;
    let models = b
        .models
        .iter()
        .map(|m| ModelHead {
            label: m.label.clone(),
            color: charts::color_hex(m.color),
            dir: m.dir.display().to_string(),
            items: m.items,
            unparsed: m.unparsed,
            judge: m.judge.clone(),
            details: details_text(&m.details),
        })
        .collect();
    let rows = b
        .metrics
        .iter()
        .map(|row| Row {
            key: row.key.clone(),
            label: row.label.clone(),
            cells: cells(&row.cells),
        })
        .collect();
    Ok(BenchView {
        id: format!("bench-{}", slug(&b.name)),
        title,
        charts,
        models,
        rows,
        pairs: pair_groups(b),
    })
}

/// The bar chart of metrics `range` of `b`.
fn bar_chart(
    b: &Benchmark,
    title: &str,
    range: std::ops::Range<usize>,
) -> Result<String, ReportError> {
    let rows = &b.metrics[range];
    let categories: Vec<String> = rows.iter().map(|m| m.key.clone()).collect();
    let series: Vec<BarSeries> = b
        .models
        .iter()
        .enumerate()
        .map(|(k, m)| BarSeries {
            color: m.color,
            bars: rows
                .iter()
                .map(|row| {
                    row.cells[k].map(|e| Bar {
                        value: e.value,
                        interval: e.interval,
                    })
                })
                .collect(),
        })
        .collect();
    charts::metric_bars(&format!("{title}: headline metrics"), &categories, &series)
        .map_err(ReportError::Render)
}

/// `n` items cut into the fewest runs of at most `most`, of even length.
fn chunks(n: usize, most: usize) -> Vec<std::ops::Range<usize>> {
    if n == 0 {
        return Vec::new();
    }
    let parts = n.div_ceil(most.max(1));
    let size = n.div_ceil(parts);
    (0..n).step_by(size).map(|s| s..(s + size).min(n)).collect()
}

fn cells(estimates: &[Option<Estimate>]) -> Vec<Cell> {
    let shown = |e: &Option<Estimate>| e.map(|e| pct(e.value));
    let best = estimates
        .iter()
        .filter_map(|e| e.map(|e| e.value))
        .fold(f64::NEG_INFINITY, f64::max);
    let several = estimates.iter().filter(|e| e.is_some()).count() > 1;
    estimates
        .iter()
        .map(|e| Cell {
            value: shown(e).unwrap_or_else(|| "—".into()),
            ci: e.map_or_else(String::new, |e| interval(e.interval, pct)),
            best: several && e.is_some_and(|e| pct(e.value) == pct(best)),
        })
        .collect()
}

fn details_text(details: &serde_json::Value) -> Option<String> {
    if details.is_null() || details.as_object().is_some_and(|o| o.is_empty()) {
        return None;
    }
    let mut text = serde_json::to_string_pretty(details).ok()?;
    if text.len() > DETAILS_MAX {
        let cut = (0..=DETAILS_MAX)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str("\n…");
    }
    Some(text)
}

fn pair_groups(b: &Benchmark) -> Vec<PairGroup> {
    let mut groups: Vec<PairGroup> = Vec::new();
    let mut last: Option<(usize, usize)> = None;
    for t in &b.pairs {
        if last != Some((t.a, t.b)) {
            groups.push(PairGroup {
                a: legend_of(b, t.a),
                b: legend_of(b, t.b),
                items: t.items,
                rows: Vec::new(),
            });
            last = Some((t.a, t.b));
        }
        if let Some(g) = groups.last_mut() {
            g.rows.push(pair_row(t));
        }
    }
    groups
}

fn pair_row(t: &PairedTest) -> PairRow {
    let (mcnemar, mcnemar_p) = t.mcnemar.map_or_else(
        || ("—".to_owned(), "—".to_owned()),
        |m| (format!("{} / {}", m.only_a, m.only_b), p_text(m.p_value)),
    );
    PairRow {
        label: t.metric_label.clone(),
        a: pct(t.a_value),
        b: pct(t.b_value),
        diff: signed_pp(t.diff),
        ci: interval(t.interval, signed_pp),
        p: t.p_value.map_or_else(|| "—".into(), p_text),
        mcnemar,
        mcnemar_p,
        significant: t.p_value.is_some_and(|p| p < 0.05),
    }
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn share(count: u64, base: u64, of: &str) -> String {
    if base == 0 {
        String::new()
    } else {
        format!("{:.0}% of {of}", count as f64 / base as f64 * 100.0)
    }
}

fn run_view(r: &RunInput) -> Result<RunView, ReportError> {
    let c = &r.counts;
    let kept = c.kept_by_filter();
    let stage = |name: &str, count: u64, note: String| Stage {
        name: name.to_owned(),
        count,
        note,
    };
    let stages = [
        stage("seeds in", c.seeds_in, String::new()),
        stage("kept by filter", kept, share(kept, c.seeds_in, "seeds")),
        stage(
            "decomposed",
            c.seeds_done,
            share(c.seeds_done, c.seeds_in, "seeds"),
        ),
        stage(
            "valid variants",
            c.variants_valid,
            share(c.variants_valid, c.variants, "variants made"),
        ),
        stage(
            "verified pairs FGIV-A",
            c.pairs_valid_fgiv_a,
            share(c.pairs_valid_fgiv_a, c.variants_valid, "valid variants"),
        ),
        stage(
            "verified pairs FGIV-R",
            c.pairs_valid_fgiv_r,
            share(c.pairs_valid_fgiv_r, c.variants_valid, "valid variants"),
        ),
    ];
    let name = folder_name(&r.dir);
    let chart = charts::funnel(&format!("{name}: pipeline funnel"), &stages)
        .map_err(ReportError::Render)?;
    let mut facts = vec![
        ("variants made".to_owned(), c.variants.to_string()),
        (
            "variants invalid".to_owned(),
            c.variants_invalid.to_string(),
        ),
        (
            "seeds quarantined".to_owned(),
            c.seeds_quarantined.to_string(),
        ),
        ("seeds pending".to_owned(), c.seeds_pending.to_string()),
        ("FGIV-Eval seeds".to_owned(), c.fgiv_eval_seeds.to_string()),
    ];
    if c.seeds_unreadable > 0 {
        facts.push(("seeds unreadable".into(), c.seeds_unreadable.to_string()));
    }
    // The yield of verifiable variants, one line per constraint family.
    for (family, y) in &c.verifiable {
        let kind = |k: &crate::input::SampleCounts| {
            format!(
                "{}/{} passed in {} samples, {} pairs",
                k.passed, k.responses, k.samples, k.pairs_valid
            )
        };
        facts.push((
            format!("verifiable {family}"),
            format!(
                "{} variants; seed response fails {}/{}; A: {}; R: {}",
                y.variants,
                y.seed_response_fails,
                y.verified,
                kind(&y.fgiv_a),
                kind(&y.fgiv_r)
            ),
        ));
    }
    let optional = [
        ("seed file", r.seeds_path.clone()),
        ("shard", r.shard.clone()),
        ("cost", r.cost_usd.map(|v| format!("${v:.2}"))),
        ("demorecon", r.tool_version.clone()),
    ];
    facts.extend(
        optional
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v))),
    );
    Ok(RunView {
        name,
        path: r.dir.display().to_string(),
        chart,
        facts,
        quarantined: c
            .quarantined_by_reason
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
    })
}

/// The training curves: (title, y description, field, fixed y range).
type Curve = (
    &'static str,
    &'static str,
    fn(&StepRow) -> Option<f64>,
    Option<(f64, f64)>,
);

const CURVES: [Curve; 4] = [
    ("Loss", "loss", |r| r.loss, None),
    ("DPO loss", "DPO loss", |r| r.dpo_loss, None),
    (
        "Reward accuracy",
        "accuracy",
        |r| r.reward_accuracy,
        Some((0.0, 1.0)),
    ),
    ("Reward margin", "margin", |r| r.reward_margin, None),
];

fn train_view(trains: &[TrainInput]) -> Result<TrainView, ReportError> {
    let labels: Vec<String> = trains.iter().map(|t| folder_name(&t.dir)).collect();
    let mut charts_out = Vec::new();
    let mut absent = Vec::new();
    for (title, y_desc, field, fixed) in CURVES {
        let series: Vec<LineSeries> = trains
            .iter()
            .enumerate()
            .map(|(i, t)| LineSeries {
                color: i,
                points: t
                    .steps
                    .iter()
                    .filter_map(|r| field(r).filter(|v| v.is_finite()).map(|v| (r.step, v)))
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if series.is_empty() {
            absent.push(title.to_owned());
            continue;
        }
        let svg = charts::lines(title, y_desc, &series, fixed).map_err(ReportError::Render)?;
        charts_out.push(ChartView {
            title: title.to_owned(),
            svg,
        });
    }
    let rows = trains
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(i, (t, label))| train_row(t, label, i))
        .collect();
    Ok(TrainView {
        legend: labels
            .iter()
            .enumerate()
            .map(|(i, l)| Legend {
                label: l.clone(),
                color: charts::color_hex(i),
            })
            .collect(),
        charts: charts_out,
        absent,
        rows,
    })
}

fn train_row(t: &TrainInput, label: &str, i: usize) -> TrainRow {
    let last = t.steps.last();
    let last_of = |f: fn(&StepRow) -> Option<f64>| num(t.steps.iter().rev().find_map(f));
    let speeds: Vec<f64> = t.steps.iter().filter_map(|r| r.tokens_per_s).collect();
    let mean_speed = (!speeds.is_empty()).then(|| speeds.iter().sum::<f64>() / speeds.len() as f64);
    TrainRow {
        label: label.to_owned(),
        color: charts::color_hex(i),
        path: t.dir.display().to_string(),
        steps: t.steps.len(),
        last_step: last.map_or(0, |r| r.step),
        loss: last_of(|r| r.loss),
        dpo_loss: last_of(|r| r.dpo_loss),
        reward_accuracy: last_of(|r| r.reward_accuracy),
        reward_margin: last_of(|r| r.reward_margin),
        lr: last
            .and_then(|r| r.lr)
            .map_or_else(|| "—".into(), |v| format!("{v:.2e}")),
        tokens_per_s: mean_speed.map_or_else(|| "—".into(), |v| format!("{v:.0}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_number_formats() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(pct(0.7234), "72.3");
        assert_eq!(signed_pp(0.0123), "+1.2");
        assert_eq!(signed_pp(-0.0004), "0.0");
        assert_eq!(signed_pp(-0.05), "\u{2212}5.0");
        assert_eq!(p_text(0.0004), "< 0.001");
        assert_eq!(p_text(1.0), "1.000");
        assert_eq!(num(Some(0.612345)), "0.6123");
        assert_eq!(num(None), "—");
        assert_eq!(interval(Some((0.1, 0.25)), pct), "[10.0, 25.0]");
        assert_eq!(slug("My Bench!"), "my-bench-");
        assert_eq!(chunks(10, 8), vec![0..5, 5..10]);
        assert_eq!(chunks(8, 8), vec![0..8]);
        assert_eq!(chunks(17, 8), vec![0..6, 6..12, 12..17]);
        assert!(chunks(0, 8).is_empty());
    }

    #[test]
    fn best_cells_are_marked_only_among_several() {
        let e = |v| {
            Some(Estimate {
                value: v,
                interval: None,
            })
        };
        let c = cells(&[e(0.5), e(0.7), None]);
        assert_eq!(
            c.iter().map(|c| c.best).collect::<Vec<_>>(),
            vec![false, true, false]
        );
        assert!(!cells(&[e(0.5)])[0].best);
    }

    #[test]
    fn long_details_are_cut_on_a_char_boundary() {
        let v = serde_json::json!({"x": "é".repeat(DETAILS_MAX)});
        let t = details_text(&v).unwrap();
        assert!(t.ends_with('…') && t.len() <= DETAILS_MAX + 4);
        assert_eq!(details_text(&serde_json::json!({})), None);
    }
}
