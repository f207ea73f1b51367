//! FollowBench's metrics over scored item records: HSR and SSR per level and overall (the
//! headline), and per constraint category × level, CSL per category, and counts by decider
//! (the summary's `details`).
//!
//! - **HSR** (hard satisfaction rate): share of items whose every added constraint is met;
//!   item scores `hsr_l{L}` / `hsr` = `[hard, 1]`.
//! - **SSR** (soft satisfaction rate): share of added constraints met; item scores
//!   `ssr_l{L}` / `ssr` = `[met, L]`. Per level this equals the reference's mean of
//!   `met / L`; overall it is constraint-weighted (the mean of the five level values is in
//!   `details.level_mean`, which is what the paper's "average" column reports).
//! - **CSL** (consistent satisfaction levels): per example group, how many levels in a row,
//!   starting at level 1, are met (hard); averaged over groups. A group counts only when its
//!   CSL is determined: every level up to and including its first failure (or all five) has a
//!   verdict. A group with an unparsed or unscored level before its first failure is left out
//!   and counted in `csl_groups_undetermined`.
//!
//! Items without scores (an unparsed judge reply, or a judge item under rules-only) are left
//! out of every total; the reference instead adds unparsed replies in as −1. Not here: scoring
//! items (see [`super`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::record::{Headline, ItemRecord, Summary};

/// How one item ended, as the metrics see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Scored: all constraints met, constraints met.
    Scored { hard: bool, met: f64 },
    /// The judge's reply could not be parsed.
    Unparsed,
    /// Not scored at all (`decided_by: none`).
    NotScored,
}

/// The fields the metrics read from one record.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    pub constraint_type: &'a str,
    pub example_id: u64,
    pub level: u32,
    pub decided_by: &'a str,
    pub outcome: Outcome,
}

/// Reads a record back into a [`Row`] (`None` when it is not a FollowBench record).
pub fn row(it: &ItemRecord) -> Option<Row<'_>> {
    let constraint_type = it.extra.get("constraint_type")?.as_str()?;
    let example_id = it.extra.get("example_id")?.as_u64()?;
    let level = u32::try_from(it.extra.get("level")?.as_u64()?).ok()?;
    let outcome = match (it.scores.get("hsr"), it.scores.get("ssr")) {
        (Some(h), Some(s)) => Outcome::Scored {
            hard: h[0] >= 1.0,
            met: s[0],
        },
        _ if it.decided_by == "none" => Outcome::NotScored,
        _ => Outcome::Unparsed,
    };
    Some(Row {
        constraint_type,
        example_id,
        level,
        decided_by: &it.decided_by,
        outcome,
    })
}

/// The levels FollowBench evaluates.
pub const LEVELS: std::ops::RangeInclusive<u32> = 1..=5;

/// CSL over example groups: (sum of determined CSLs, groups determined, groups undetermined).
pub fn csl(rows: &[Row<'_>]) -> (f64, usize, usize) {
    let mut groups: BTreeMap<(&str, u64), BTreeMap<u32, Outcome>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.constraint_type, r.example_id))
            .or_default()
            .insert(r.level, r.outcome);
    }
    let (mut sum, mut known, mut unknown) = (0.0, 0, 0);
    for levels in groups.values() {
        let mut count = 0u32;
        let mut determined = true;
        for level in LEVELS {
            match levels.get(&level) {
                Some(Outcome::Scored { hard: true, .. }) => count += 1,
                Some(Outcome::Scored { hard: false, .. }) => break,
                _ => {
                    determined = false;
                    break;
                }
            }
        }
        if determined {
            sum += f64::from(count);
            known += 1;
        } else {
            unknown += 1;
        }
    }
    (sum, known, unknown)
}

fn rate(num: f64, den: f64) -> Value {
    if den > 0.0 {
        json!(num / den)
    } else {
        Value::Null
    }
}

/// HSR/SSR/n over `rows` (n = scored items).
fn block(rows: &[&Row<'_>]) -> Map<String, Value> {
    let (mut hard, mut met, mut of, mut n) = (0.0, 0.0, 0.0, 0usize);
    let (mut unparsed, mut not_scored) = (0usize, 0usize);
    for r in rows {
        match r.outcome {
            Outcome::Scored { hard: h, met: m } => {
                n += 1;
                hard += f64::from(u8::from(h));
                met += m;
                of += f64::from(r.level);
            }
            Outcome::Unparsed => unparsed += 1,
            Outcome::NotScored => not_scored += 1,
        }
    }
    let mut m = Map::new();
    m.insert("n".into(), json!(n));
    m.insert("hsr".into(), rate(hard, n as f64));
    m.insert("ssr".into(), rate(met, of));
    if unparsed > 0 {
        m.insert("unparsed".into(), json!(unparsed));
    }
    if not_scored > 0 {
        m.insert("not_scored".into(), json!(not_scored));
    }
    m
}

/// The summary over FollowBench records; `options` is recorded under `details.options`.
pub fn summarize(items: &[ItemRecord], options: Value) -> Summary {
    let mut headline = Vec::new();
    for level in LEVELS {
        headline.push(Headline::ratio(
            &format!("hsr_l{level}"),
            &format!("FollowBench HSR level {level}"),
            items,
        ));
    }
    headline.push(Headline::ratio("hsr", "FollowBench HSR", items));
    for level in LEVELS {
        headline.push(Headline::ratio(
            &format!("ssr_l{level}"),
            &format!("FollowBench SSR level {level}"),
            items,
        ));
    }
    headline.push(Headline::ratio("ssr", "FollowBench SSR", items));

    let level_mean = |prefix: &str| {
        let values: Option<Vec<f64>> = LEVELS
            .map(|l| {
                headline
                    .iter()
                    .find(|h| h.key == format!("{prefix}_l{l}"))
                    .and_then(|h| h.value)
            })
            .collect();
        values.map_or(Value::Null, |v| {
            json!(v.iter().sum::<f64>() / v.len() as f64)
        })
    };
    let level_mean = json!({ "hsr": level_mean("hsr"), "ssr": level_mean("ssr") });

    let rows: Vec<Row<'_>> = items.iter().filter_map(row).collect();
    let mut types: Vec<&str> = rows.iter().map(|r| r.constraint_type).collect();
    types.sort_by_key(|t| type_order(t));
    types.dedup();

    let mut by_category = Map::new();
    for t in &types {
        let of_type: Vec<&Row<'_>> = rows.iter().filter(|r| r.constraint_type == *t).collect();
        let mut cat = block(&of_type);
        let mut levels = Map::new();
        for level in LEVELS {
            let at: Vec<&Row<'_>> = of_type
                .iter()
                .copied()
                .filter(|r| r.level == level)
                .collect();
            if !at.is_empty() {
                levels.insert(level.to_string(), Value::Object(block(&at)));
            }
        }
        cat.insert("levels".into(), Value::Object(levels));
        let owned: Vec<Row<'_>> = of_type.iter().map(|r| (*r).clone()).collect();
        let (sum, known, unknown) = csl(&owned);
        cat.insert("csl".into(), rate(sum, known as f64));
        cat.insert("csl_groups".into(), json!(known));
        if unknown > 0 {
            cat.insert("csl_groups_undetermined".into(), json!(unknown));
        }
        by_category.insert((*t).to_owned(), Value::Object(cat));
    }
    let (sum, known, unknown) = csl(&rows);

    let mut decided_by: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *decided_by.entry(r.decided_by).or_default() += 1;
    }
    let unparsed_ids: Vec<&str> = items
        .iter()
        .filter(|it| row(it).is_some_and(|r| r.outcome == Outcome::Unparsed))
        .map(|it| it.id.as_str())
        .collect();
    let not_scored = rows
        .iter()
        .filter(|r| r.outcome == Outcome::NotScored)
        .count();

    let details = json!({
        "by_category": by_category,
        "level_mean": level_mean,
        "csl": rate(sum, known as f64),
        "csl_groups": known,
        "csl_groups_undetermined": unknown,
        "decided_by": decided_by,
        "not_scored": not_scored,
        "unparsed_ids": unparsed_ids,
        "options": options,
        "method": "HSR = items with every added constraint met / items scored; SSR = constraints met / constraints of items scored (per level = the reference's mean of met/L; level_mean = mean of the five level values); CSL = levels met in a row from level 1 per example group, averaged over groups whose value is determined (every level up to its first failure has a verdict). Unparsed judge replies and unscored items are left out of every total (the reference adds unparsed replies in as -1).",
    });
    let mut summary = Summary::new("followbench", items.len(), headline, details);
    summary.unparsed = unparsed_ids.len();
    summary
}

/// Categories in FollowBench's order; unknown ones after, by name.
fn type_order(t: &str) -> (usize, String) {
    let i = super::CONSTRAINT_TYPES
        .iter()
        .position(|c| *c == t)
        .unwrap_or(usize::MAX);
    (i, t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the benchmark writes it: `met` constraints met when scored, `None` when
    /// not (unparsed with `decided_by: judge`, unscored with `none`).
    fn rec(t: &str, ex: u64, level: u32, met: Option<u32>, decided_by: &str) -> ItemRecord {
        let mut it = ItemRecord {
            id: format!("{t}/{ex}/L{level}"),
            decided_by: decided_by.into(),
            ..Default::default()
        };
        it.extra.insert("constraint_type".into(), json!(t));
        it.extra.insert("example_id".into(), json!(ex));
        it.extra.insert("level".into(), json!(level));
        if let Some(met) = met {
            let hard = f64::from(u8::from(met == level));
            let l = f64::from(level);
            it.scores.insert(format!("hsr_l{level}"), [hard, 1.0]);
            it.scores
                .insert(format!("ssr_l{level}"), [f64::from(met), l]);
            it.scores.insert("hsr".into(), [hard, 1.0]);
            it.scores.insert("ssr".into(), [f64::from(met), l]);
        }
        it
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn hsr_ssr_csl_on_a_hand_made_set() {
        // content group 1: levels 1-5 met 1,2,2,4,5 → hard at L1, L2, L4, L5; CSL 2.
        // content group 2: met 0,2,3,4,5 → hard at L2..L5; CSL 0.
        // style group 1: met 1,2,3,4,5 → all hard; CSL 5.
        let mut items = Vec::new();
        for (l, m) in [(1, 1), (2, 2), (3, 2), (4, 4), (5, 5)] {
            items.push(rec("content", 1, l, Some(m), "judge"));
        }
        for (l, m) in [(1, 0), (2, 2), (3, 3), (4, 4), (5, 5)] {
            items.push(rec("content", 2, l, Some(m), "rule:E2E"));
        }
        for l in 1..=5 {
            items.push(rec("style", 1, l, Some(l), "judge"));
        }
        let s = summarize(&items, json!({}));
        // Level 1: hard 1,0,1 → 2/3; SSR (1+0+1)/3.
        assert!(close(s.metric("hsr_l1").unwrap().value, 2.0 / 3.0));
        assert!(close(s.metric("ssr_l1").unwrap().value, 2.0 / 3.0));
        // Level 3: hard 0,1,1 → 2/3; SSR (2+3+3)/9.
        assert!(close(s.metric("hsr_l3").unwrap().value, 2.0 / 3.0));
        assert!(close(s.metric("ssr_l3").unwrap().value, 8.0 / 9.0));
        // Overall: hard 4 + 4 + 5 = 13 of 15; met 14 + 14 + 15 = 43 of 45.
        assert!(close(s.metric("hsr").unwrap().value, 13.0 / 15.0));
        assert!(close(s.metric("ssr").unwrap().value, 43.0 / 45.0));
        let d = &s.details;
        assert_eq!(d["by_category"]["content"]["csl"], json!(1.0));
        assert_eq!(d["by_category"]["content"]["csl_groups"], json!(2));
        assert_eq!(d["by_category"]["style"]["csl"], json!(5.0));
        assert_eq!(d["csl"], json!(7.0 / 3.0));
        assert_eq!(
            d["by_category"]["content"]["levels"]["3"]["hsr"],
            json!(0.5)
        );
        assert_eq!(
            d["by_category"]["content"]["levels"]["3"]["ssr"],
            json!(5.0 / 6.0)
        );
        assert_eq!(d["by_category"]["content"]["levels"]["3"]["n"], json!(2));
        assert_eq!(d["decided_by"]["judge"], json!(10));
        assert_eq!(d["decided_by"]["rule:E2E"], json!(5));
        assert_eq!(s.unparsed, 0);
        assert_eq!(
            d["level_mean"]["hsr"],
            json!((2.0 / 3.0 + 1.0 + 2.0 / 3.0 + 1.0 + 1.0) / 5.0)
        );
        assert_eq!(
            s.headline
                .iter()
                .map(|h| h.key.as_str())
                .collect::<Vec<_>>(),
            [
                "hsr_l1", "hsr_l2", "hsr_l3", "hsr_l4", "hsr_l5", "hsr", "ssr_l1", "ssr_l2",
                "ssr_l3", "ssr_l4", "ssr_l5", "ssr"
            ]
        );
    }

    #[test]
    fn unparsed_and_unscored_items_are_left_out_and_counted() {
        let mut items = vec![
            rec("format", 1, 1, Some(1), "judge"),
            rec("format", 1, 2, None, "judge"), // unparsed before the first failure
            rec("format", 1, 3, Some(0), "judge"),
            rec("format", 1, 4, Some(4), "judge"),
            rec("format", 1, 5, Some(5), "judge"),
            rec("format", 2, 1, Some(0), "judge"), // fails first: CSL 0 is determined
            rec("format", 2, 2, None, "none"),
            rec("format", 2, 3, None, "judge"),
            rec("format", 2, 4, None, "none"),
            rec("format", 2, 5, None, "none"),
        ];
        items[1].verdict = Value::Null;
        let s = summarize(&items, json!({"rules_only": false}));
        assert_eq!(s.unparsed, 2);
        assert_eq!(
            s.details["unparsed_ids"],
            json!(["format/1/L2", "format/2/L3"])
        );
        assert_eq!(s.details["not_scored"], json!(3));
        // Level 2 has no scored item at all.
        assert_eq!(s.metric("hsr_l2").unwrap().value, None);
        assert_eq!(s.metric("hsr_l1").unwrap().value, Some(0.5));
        // Overall: scored L1 (1/1), L1 (0/1), L3 (0/3), L4 (4/4), L5 (5/5).
        assert!(close(s.metric("hsr").unwrap().value, 3.0 / 5.0));
        assert!(close(s.metric("ssr").unwrap().value, 10.0 / 14.0));
        let f = &s.details["by_category"]["format"];
        assert_eq!(f["csl"], json!(0.0));
        assert_eq!(f["csl_groups"], json!(1));
        assert_eq!(f["csl_groups_undetermined"], json!(1));
        assert_eq!(f["levels"]["2"]["unparsed"], json!(1));
        assert_eq!(f["levels"]["2"]["not_scored"], json!(1));
        assert_eq!(f["levels"]["2"]["n"], json!(0));
        assert_eq!(f["levels"]["2"]["hsr"], Value::Null);
        assert_eq!(s.details["level_mean"]["hsr"], Value::Null);
    }
}
