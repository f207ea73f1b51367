//! From eval folders to the numbers the page shows: folders grouped by benchmark, one column
//! per model, every headline metric recomputed from the items as a ratio of sums with a 95 %
//! bootstrap interval, and paired comparisons of two models on the items they share.
//!
//! Nothing here knows a benchmark: metrics are whatever each summary's headline lists, and an
//! item's `scores` say what it contributes. Not here: drawing or formatting (`charts`, `page`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use demorecon_eval::record::{Headline, ItemRecord, Summary};
use serde_json::Value;

use crate::input::{EvalInput, folder_name};
use crate::stats::{self, Columns, Rng};
use crate::{PairMode, ReportOptions};

/// All eval folders of one benchmark.
#[derive(Debug, Clone)]
pub struct Benchmark {
    pub name: String,
    pub models: Vec<ModelEval>,
    /// Every headline metric any of the folders lists, in order of first appearance.
    pub metrics: Vec<MetricRow>,
    pub pairs: Vec<PairedTest>,
}

/// One eval folder as a column of its benchmark.
#[derive(Debug, Clone)]
pub struct ModelEval {
    /// The model's display name (made unique within the report).
    pub label: String,
    /// Index of this model in the report's model list (its colour).
    pub color: usize,
    pub dir: PathBuf,
    pub items: usize,
    pub unparsed: usize,
    pub judge: Option<String>,
    pub details: Value,
}

/// One headline metric across the models of a benchmark.
#[derive(Debug, Clone)]
pub struct MetricRow {
    pub key: String,
    pub label: String,
    /// One cell per model; `None` where that folder has no value for the metric.
    pub cells: Vec<Option<Estimate>>,
}

/// A headline value (a fraction) with its 95 % bootstrap interval, when the items allow one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub interval: Option<(f64, f64)>,
}

/// Model `b` against model `a` on one metric, over the items both were scored on.
#[derive(Debug, Clone)]
pub struct PairedTest {
    pub metric_key: String,
    pub metric_label: String,
    /// Indices into the benchmark's `models`.
    pub a: usize,
    pub b: usize,
    /// Items in common (joined by id).
    pub items: usize,
    pub a_value: f64,
    pub b_value: f64,
    /// `b_value - a_value`.
    pub diff: f64,
    pub interval: Option<(f64, f64)>,
    pub p_value: Option<f64>,
    /// McNemar's exact test, for metrics that are 0/1 per item on both sides.
    pub mcnemar: Option<McNemar>,
}

/// Discordant pairs and McNemar's exact two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McNemar {
    /// Items only model `a` passed.
    pub only_a: u64,
    /// Items only model `b` passed.
    pub only_b: u64,
    pub p_value: f64,
}

/// How a metric is computed from summed columns.
#[derive(Debug, Clone)]
enum Spec {
    Ratio(usize),
    Mean(Vec<Spec>),
}

/// The columns of a set of items and how each metric reads them.
struct Scorer {
    columns: Columns,
    /// One entry per requested metric; `None` when the items cannot give it.
    specs: Vec<Option<Spec>>,
}

impl Scorer {
    /// A scorer for `keys` (headline keys of `headline`) over `items`.
    fn new(headline: &[Headline], keys: &[&str], items: &[&ItemRecord]) -> Self {
        let mut col_of: BTreeMap<String, usize> = BTreeMap::new();
        let specs = keys
            .iter()
            .map(|k| resolve(headline, k, items, &mut col_of, 0))
            .collect();
        let mut columns = Columns {
            num: vec![vec![0.0; items.len()]; col_of.len()],
            den: vec![vec![0.0; items.len()]; col_of.len()],
        };
        for (key, &c) in &col_of {
            for (i, it) in items.iter().enumerate() {
                if let Some([n, d]) = it.scores.get(key) {
                    columns.num[c][i] = *n;
                    columns.den[c][i] = *d;
                }
            }
        }
        Scorer { columns, specs }
    }

    /// Every metric's value under `weights` (item multiplicities).
    fn values(&self, weights: &[f64]) -> Vec<Option<f64>> {
        let sums = self.columns.sums(weights);
        self.specs
            .iter()
            .map(|s| s.as_ref().and_then(|s| value(s, &sums)))
            .collect()
    }
}

fn resolve(
    headline: &[Headline],
    key: &str,
    items: &[&ItemRecord],
    col_of: &mut BTreeMap<String, usize>,
    depth: usize,
) -> Option<Spec> {
    if depth > 4 {
        return None;
    }
    let h = headline.iter().find(|h| h.key == key);
    if let Some(h) = h.filter(|h| !h.mean_of.is_empty()) {
        let parts: Option<Vec<Spec>> = h
            .mean_of
            .iter()
            .map(|k| resolve(headline, k, items, col_of, depth + 1))
            .collect();
        return parts.map(Spec::Mean);
    }
    if !items.iter().any(|it| it.scores.contains_key(key)) {
        return None;
    }
    let next = col_of.len();
    Some(Spec::Ratio(*col_of.entry(key.to_owned()).or_insert(next)))
}

fn value(spec: &Spec, sums: &[(f64, f64)]) -> Option<f64> {
    match spec {
        Spec::Ratio(c) => {
            let (n, d) = sums[*c];
            (d > 0.0).then(|| n / d)
        }
        Spec::Mean(parts) => {
            let vals: Option<Vec<f64>> = parts.iter().map(|p| value(p, sums)).collect();
            vals.filter(|v| !v.is_empty())
                .map(|v| v.iter().sum::<f64>() / v.len() as f64)
        }
    }
}

/// The name an eval folder's model goes by: the model id, else its spec, else the responses
/// file, else the folder's name.
pub fn model_name(ev: &EvalInput) -> String {
    let s: &Summary = &ev.summary;
    let from_model = s.model.as_ref().and_then(|m| {
        [Some(&m.model), m.spec.as_ref()]
            .into_iter()
            .flatten()
            .find(|t| !t.trim().is_empty())
            .cloned()
    });
    let from_responses = s
        .responses
        .as_ref()
        .filter(|r| !r.trim().is_empty())
        .map(|r| {
            let p = std::path::Path::new(r.as_str());
            p.file_name()
                .map_or_else(|| r.clone(), |n| n.to_string_lossy().into_owned())
        });
    from_model
        .or(from_responses)
        .unwrap_or_else(|| folder_name(&ev.dir))
}

/// Display labels for `evals`, made unique: a model seen twice in one benchmark gets its
/// folder's name added (in every benchmark, so its colour stays one).
pub fn model_labels(evals: &[EvalInput]) -> Vec<String> {
    let names: Vec<String> = evals.iter().map(model_name).collect();
    let mut per_bench: HashMap<(&str, &str), usize> = HashMap::new();
    for (ev, name) in evals.iter().zip(&names) {
        *per_bench
            .entry((ev.summary.benchmark.as_str(), name.as_str()))
            .or_default() += 1;
    }
    let clashing: Vec<&str> = per_bench
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|((_, name), _)| *name)
        .collect();
    let mut labels: Vec<String> = evals
        .iter()
        .zip(&names)
        .map(|(ev, name)| {
            if clashing.contains(&name.as_str()) {
                format!("{name} · {}", folder_name(&ev.dir))
            } else {
                name.clone()
            }
        })
        .collect();
    // Folders with the same name too: fall back to the path as given.
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for (ev, label) in evals.iter().zip(labels.iter_mut()) {
        let n = seen
            .entry((ev.summary.benchmark.clone(), label.clone()))
            .or_default();
        *n += 1;
        if *n > 1 {
            *label = format!("{label} · {}", ev.dir.display());
        }
    }
    labels
}

/// Groups `evals` by benchmark (in order of first appearance) and computes every number.
/// `colors[i]` is the colour index of `evals[i]`'s model; problems worth a reader's attention
/// go to `warnings`.
pub fn benchmarks(
    evals: &[EvalInput],
    labels: &[String],
    colors: &[usize],
    opts: &ReportOptions,
    warnings: &mut Vec<String>,
) -> Vec<Benchmark> {
    let mut order: Vec<&str> = Vec::new();
    for ev in evals {
        if !order.contains(&ev.summary.benchmark.as_str()) {
            order.push(&ev.summary.benchmark);
        }
    }
    order
        .into_iter()
        .map(|name| {
            let members: Vec<usize> = (0..evals.len())
                .filter(|&i| evals[i].summary.benchmark == name)
                .collect();
            benchmark(name, &members, evals, labels, colors, opts, warnings)
        })
        .collect()
}

fn benchmark(
    name: &str,
    members: &[usize],
    evals: &[EvalInput],
    labels: &[String],
    colors: &[usize],
    opts: &ReportOptions,
    warnings: &mut Vec<String>,
) -> Benchmark {
    let mut keys: Vec<(String, String)> = Vec::new();
    for &i in members {
        for h in &evals[i].summary.headline {
            if !keys.iter().any(|(k, _)| *k == h.key) {
                keys.push((h.key.clone(), h.label.clone()));
            }
        }
    }
    let key_refs: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    let columns: Vec<Vec<Option<Estimate>>> = members
        .iter()
        .map(|&i| {
            let seed = stats::stable_hash(opts.seed, &["estimate", name, &labels[i]]);
            estimates(
                &evals[i],
                &key_refs,
                opts.resamples,
                seed,
                &labels[i],
                warnings,
            )
        })
        .collect();
    let metrics = keys
        .iter()
        .enumerate()
        .map(|(m, (key, label))| MetricRow {
            key: key.clone(),
            label: label.clone(),
            cells: columns.iter().map(|col| col[m]).collect(),
        })
        .collect();
    let models = members
        .iter()
        .map(|&i| model_eval(&evals[i], &labels[i], colors[i]))
        .collect();
    let mut pairs = Vec::new();
    for (a, b) in pair_indices(members.len(), opts.pairs) {
        let (ea, eb) = (&evals[members[a]], &evals[members[b]]);
        let (la, lb) = (&labels[members[a]], &labels[members[b]]);
        let seed = stats::stable_hash(opts.seed, &["paired", name, la, lb]);
        let tests = paired(ea, eb, opts.resamples, seed, (la, lb), warnings);
        pairs.extend(tests.into_iter().map(|mut t| {
            t.a = a;
            t.b = b;
            t
        }));
    }
    Benchmark {
        name: name.to_owned(),
        models,
        metrics,
        pairs,
    }
}

fn model_eval(ev: &EvalInput, label: &str, color: usize) -> ModelEval {
    let judge = ev.summary.judge.as_ref().map(|j| {
        let mut t = if j.model.is_empty() {
            j.kind.clone()
        } else {
            j.model.clone()
        };
        if let Some(v) = &j.prompt_version {
            t.push_str(&format!(" ({v})"));
        }
        t
    });
    ModelEval {
        label: label.to_owned(),
        color,
        dir: ev.dir.clone(),
        items: ev.items.len(),
        unparsed: ev.summary.unparsed,
        judge,
        details: ev.summary.details.clone(),
    }
}

/// Which model pairs to compare: every pair (earlier input first), or each against the first.
fn pair_indices(n: usize, mode: PairMode) -> Vec<(usize, usize)> {
    match mode {
        PairMode::AllPairs => (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .collect(),
        PairMode::FirstAsBaseline => (1..n).map(|b| (0, b)).collect(),
    }
}

/// One eval folder's estimate of each of `keys` (`None` where it has no such headline).
fn estimates(
    ev: &EvalInput,
    keys: &[&str],
    resamples: usize,
    seed: u64,
    label: &str,
    warnings: &mut Vec<String>,
) -> Vec<Option<Estimate>> {
    let headline = &ev.summary.headline;
    let items: Vec<&ItemRecord> = ev.items.iter().collect();
    let scorer = Scorer::new(headline, keys, &items);
    let point = scorer.values(&vec![1.0; items.len()]);
    let samples = bootstrap(&[&scorer], items.len(), resamples, seed, |v| v[0].clone());
    keys.iter()
        .enumerate()
        .map(|(m, key)| {
            let h = headline.iter().find(|h| h.key == *key)?;
            match (point[m], h.value) {
                (Some(v), stated) => {
                    if let Some(s) = stated.filter(|s| (s - v).abs() > 1e-9 * s.abs().max(1.0)) {
                        warnings.push(format!(
                            "{}: {label}: summary says {key} = {s}, its items give {v}",
                            ev.dir.display()
                        ));
                    }
                    let mut xs = samples[m].clone();
                    Some(Estimate {
                        value: v,
                        interval: stats::interval95(&mut xs),
                    })
                }
                (None, Some(stated)) => Some(Estimate {
                    value: stated,
                    interval: None,
                }),
                (None, None) => None,
            }
        })
        .collect()
}

/// Runs `resamples` bootstrap resamples of `n` items, scoring each with every scorer, and
/// collects `pick(values per scorer)[metric]` per metric (resamples giving `None` are dropped).
fn bootstrap(
    scorers: &[&Scorer],
    n: usize,
    resamples: usize,
    seed: u64,
    pick: impl Fn(&[Vec<Option<f64>>]) -> Vec<Option<f64>>,
) -> Vec<Vec<f64>> {
    let metrics = scorers.first().map_or(0, |s| s.specs.len());
    let mut out = vec![Vec::with_capacity(resamples); metrics];
    if n == 0 {
        return out;
    }
    let mut rng = Rng::new(seed);
    let mut weights = Vec::with_capacity(n);
    for _ in 0..resamples {
        stats::resample_weights(&mut rng, n, &mut weights);
        let values: Vec<Vec<Option<f64>>> = scorers.iter().map(|s| s.values(&weights)).collect();
        for (m, v) in pick(&values).into_iter().enumerate() {
            if let Some(v) = v {
                out[m].push(v);
            }
        }
    }
    out
}

/// Paired comparisons of `b` against `a` on every metric both list, over shared item ids.
fn paired(
    a: &EvalInput,
    b: &EvalInput,
    resamples: usize,
    seed: u64,
    (la, lb): (&str, &str),
    warnings: &mut Vec<String>,
) -> Vec<PairedTest> {
    let (ia, ib) = join(a, b, (la, lb), warnings);
    if ia.is_empty() {
        return Vec::new();
    }
    let keys: Vec<(&str, &str)> = a
        .summary
        .headline
        .iter()
        .filter(|h| b.summary.metric(&h.key).is_some())
        .map(|h| (h.key.as_str(), h.label.as_str()))
        .collect();
    let key_refs: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
    let sa = Scorer::new(&a.summary.headline, &key_refs, &ia);
    let sb = Scorer::new(&b.summary.headline, &key_refs, &ib);
    let ones = vec![1.0; ia.len()];
    let (pa, pb) = (sa.values(&ones), sb.values(&ones));
    let diffs = bootstrap(&[&sa, &sb], ia.len(), resamples, seed, |v| {
        v[0].iter()
            .zip(&v[1])
            .map(|(x, y)| Some(y.as_ref()? - x.as_ref()?))
            .collect()
    });
    keys.iter()
        .enumerate()
        .filter_map(|(m, (key, label))| {
            let (av, bv) = (pa[m]?, pb[m]?);
            let mut d = diffs[m].clone();
            Some(PairedTest {
                metric_key: (*key).to_owned(),
                metric_label: (*label).to_owned(),
                a: 0,
                b: 0,
                items: ia.len(),
                a_value: av,
                b_value: bv,
                diff: bv - av,
                p_value: stats::bootstrap_p(&d),
                interval: stats::interval95(&mut d),
                mcnemar: mcnemar(key, &ia, &ib),
            })
        })
        .collect()
}

/// The items of `a` and `b` with the same id, aligned, in `a`'s order (first of duplicates).
fn join<'a>(
    a: &'a EvalInput,
    b: &'a EvalInput,
    (la, lb): (&str, &str),
    warnings: &mut Vec<String>,
) -> (Vec<&'a ItemRecord>, Vec<&'a ItemRecord>) {
    let mut by_id: HashMap<&str, &ItemRecord> = HashMap::new();
    for it in &b.items {
        by_id.entry(it.id.as_str()).or_insert(it);
    }
    let mut seen: HashMap<&str, ()> = HashMap::new();
    let (mut ia, mut ib) = (Vec::new(), Vec::new());
    for it in &a.items {
        if seen.insert(it.id.as_str(), ()).is_some() {
            continue;
        }
        if let Some(other) = by_id.get(it.id.as_str()) {
            ia.push(it);
            ib.push(*other);
        }
    }
    let bench = &a.summary.benchmark;
    if ia.len() < a.items.len() || ia.len() < b.items.len() {
        warnings.push(format!(
            "{bench}: {la} ({} items) and {lb} ({} items) share {} item ids; \
             the paired test uses those",
            a.items.len(),
            b.items.len(),
            ia.len()
        ));
    }
    (ia, ib)
}

/// McNemar's test for `key` when every shared item scores it 0/1 out of 1 on both sides
/// (items where neither side has the key are left out).
fn mcnemar(key: &str, ia: &[&ItemRecord], ib: &[&ItemRecord]) -> Option<McNemar> {
    let binary = |s: &[f64; 2]| s[1] == 1.0 && (s[0] == 0.0 || s[0] == 1.0);
    let (mut only_a, mut only_b, mut used) = (0u64, 0u64, 0usize);
    for (x, y) in ia.iter().zip(ib) {
        match (x.scores.get(key), y.scores.get(key)) {
            (None, None) => continue,
            (Some(sx), Some(sy)) if binary(sx) && binary(sy) => {
                used += 1;
                only_a += u64::from(sx[0] == 1.0 && sy[0] == 0.0);
                only_b += u64::from(sx[0] == 0.0 && sy[0] == 1.0);
            }
            _ => return None,
        }
    }
    (used > 0).then(|| McNemar {
        only_a,
        only_b,
        p_value: stats::mcnemar_exact(only_a, only_b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use demorecon_eval::record::{ModelInfo, Summary};

    fn item(id: &str, scores: &[(&str, [f64; 2])]) -> ItemRecord {
        ItemRecord {
            id: id.into(),
            decided_by: "judge".into(),
            scores: scores.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        }
    }

    fn eval(model: &str, items: Vec<ItemRecord>) -> EvalInput {
        let yes = Headline::ratio("yes", "Yes accuracy", &items);
        let no = Headline::ratio("no", "No accuracy", &items);
        let bal = Headline::mean("balanced", "Balanced", &[&yes, &no]);
        let mut summary = Summary::new("fgiv", items.len(), vec![yes, no, bal], Value::Null);
        summary.model = Some(ModelInfo {
            kind: "openai".into(),
            model: model.into(),
            ..Default::default()
        });
        EvalInput {
            dir: PathBuf::from(format!("/x/{model}")),
            summary,
            items,
        }
    }

    fn items(pattern: &[(bool, u8)]) -> Vec<ItemRecord> {
        pattern
            .iter()
            .enumerate()
            .map(|(i, (is_yes, pass))| {
                let key = if *is_yes { "yes" } else { "no" };
                item(&format!("i{i}"), &[(key, [f64::from(*pass), 1.0])])
            })
            .collect()
    }

    fn opts() -> ReportOptions {
        ReportOptions {
            resamples: 400,
            ..Default::default()
        }
    }

    #[test]
    fn mean_of_metrics_are_means_of_ratios_with_intervals() {
        let a = eval("m", items(&[(true, 1), (true, 0), (false, 1), (false, 1)]));
        let mut w = Vec::new();
        let b = benchmarks(&[a], &["m".into()], &[0], &opts(), &mut w);
        assert!(w.is_empty(), "{w:?}");
        let rows = &b[0].metrics;
        assert_eq!(rows.len(), 3);
        let bal = rows[2].cells[0].unwrap();
        assert_eq!(bal.value, 0.75);
        let (lo, hi) = bal.interval.unwrap();
        assert!(lo <= 0.75 && 0.75 <= hi && lo >= 0.0 && hi <= 1.0);
    }

    #[test]
    fn identical_models_differ_by_zero_with_p_one() {
        let its = items(&[(true, 1), (true, 0), (false, 1), (false, 0), (true, 1)]);
        let evals = [eval("a", its.clone()), eval("b", its)];
        let mut w = Vec::new();
        let b = benchmarks(&evals, &["a".into(), "b".into()], &[0, 1], &opts(), &mut w);
        assert_eq!(b[0].pairs.len(), 3);
        for t in &b[0].pairs {
            assert_eq!(t.diff, 0.0);
            assert_eq!(t.interval, Some((0.0, 0.0)));
            assert_eq!(t.p_value, Some(1.0));
        }
        let yes = &b[0].pairs[0];
        assert_eq!(
            yes.mcnemar,
            Some(McNemar {
                only_a: 0,
                only_b: 0,
                p_value: 1.0
            })
        );
        assert!(b[0].pairs[2].mcnemar.is_none(), "balanced is not 0/1");
    }

    #[test]
    fn a_clear_difference_is_significant_and_discordant_pairs_are_counted() {
        let n = 60;
        let a: Vec<(bool, u8)> = (0..n).map(|i| (i % 2 == 0, u8::from(i % 5 == 0))).collect();
        let b: Vec<(bool, u8)> = (0..n).map(|i| (i % 2 == 0, u8::from(i % 5 != 1))).collect();
        let evals = [eval("a", items(&a)), eval("b", items(&b))];
        let mut w = Vec::new();
        let bm = benchmarks(&evals, &["a".into(), "b".into()], &[0, 1], &opts(), &mut w);
        let yes = &bm[0].pairs[0];
        assert!(yes.diff > 0.5, "{yes:?}");
        assert!(yes.p_value.unwrap() < 0.01);
        let (lo, hi) = yes.interval.unwrap();
        assert!(lo <= yes.diff && yes.diff <= hi && lo > 0.0);
        let mc = yes.mcnemar.unwrap();
        assert_eq!(mc.only_a, 0);
        assert!(mc.only_b > 15 && mc.p_value < 1e-4, "{mc:?}");
    }

    #[test]
    fn pairs_join_by_id_and_warn_about_unshared_items() {
        let a = eval("a", items(&[(true, 1), (true, 0), (false, 1)]));
        let mut b = eval("b", items(&[(true, 1), (true, 0)]));
        b.items.reverse();
        let mut w = Vec::new();
        let bm = benchmarks(&[a, b], &["a".into(), "b".into()], &[0, 1], &opts(), &mut w);
        let yes = &bm[0].pairs[0];
        assert_eq!((yes.items, yes.diff), (2, 0.0));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("share 2 item ids"), "{w:?}");
    }

    #[test]
    fn labels_are_unique_and_fall_back_to_the_folder() {
        let mut a = eval("m", items(&[(true, 1)]));
        let mut b = eval("m", items(&[(true, 1)]));
        a.dir = PathBuf::from("/r/one");
        b.dir = PathBuf::from("/r/two");
        let mut c = eval("x", items(&[(true, 1)]));
        c.summary.model = None;
        c.dir = PathBuf::from("/r/three");
        let labels = model_labels(&[a, b, c]);
        assert_eq!(labels, vec!["m · one", "m · two", "three"]);
    }

    #[test]
    fn pair_modes() {
        assert_eq!(
            pair_indices(3, PairMode::AllPairs),
            vec![(0, 1), (0, 2), (1, 2)]
        );
        assert_eq!(
            pair_indices(3, PairMode::FirstAsBaseline),
            vec![(0, 1), (0, 2)]
        );
        assert!(pair_indices(1, PairMode::AllPairs).is_empty());
    }
}
