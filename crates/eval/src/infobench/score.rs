//! From verdicts to DRFR: one item's record, and the summary over all of them.
//!
//! DRFR counts like the reference's `bool_ratio`: every verdict recorded is one question in
//! the denominator and a YES is one in the numerator; an unparsed reply (`None`) counts as a
//! NO; questions never asked because an unparsed reply stopped the conversation are in
//! neither. Per subset and per label the same counting applies, a question with several
//! labels counting once in each of them.
//!
//! Not here: getting the verdicts (the judge in [`super::protocol`], or a file in
//! [`super::files`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Item, NAME, Subset};
use crate::record::{Headline, ItemRecord, Summary};

/// The labels InFoBench uses, in the order the summary lists them.
pub const LABELS: [&str; 5] = ["Content", "Format", "Number", "Style", "Linguistic"];

/// The metric key of a label's DRFR.
pub fn label_key(label: &str) -> String {
    format!("drfr_label_{label}")
}

/// One item's record: its verdicts (one per question asked), every raw judge reply, and its
/// `[yes, recorded]` for `drfr`, its subset's key and each label of the questions asked.
pub fn record(
    item: &Item,
    response: String,
    verdicts: Vec<Option<bool>>,
    judge_raw: Vec<String>,
    decided_by: &str,
) -> ItemRecord {
    let mut scores: BTreeMap<String, [f64; 2]> = BTreeMap::new();
    let mut add = |key: String, yes: bool| {
        let s = scores.entry(key).or_insert([0.0, 0.0]);
        s[0] += f64::from(u8::from(yes));
        s[1] += 1.0;
    };
    for (v, labels) in verdicts.iter().zip(&item.question_label) {
        let yes = *v == Some(true);
        add("drfr".into(), yes);
        add(item.subset.key().into(), yes);
        for label in labels {
            add(label_key(label), yes);
        }
    }
    let total = item.decomposed_questions.len();
    let unparsed = verdicts.iter().filter(|v| v.is_none()).count();
    let stopped = verdicts.len() < total;
    let note = match (unparsed, stopped) {
        (0, false) => None,
        (0, true) => Some(format!(
            "{} of {total} questions have a verdict",
            verdicts.len()
        )),
        _ => Some(format!(
            "reply {} is neither yes nor no; {} of {total} questions were not asked",
            verdicts
                .iter()
                .position(Option::is_none)
                .map_or(0, |i| i + 1),
            total - verdicts.len()
        )),
    };
    let mut extra = BTreeMap::new();
    extra.insert("subset".to_owned(), json!(item.subset.as_str()));
    extra.insert("category".to_owned(), json!(item.category));
    extra.insert("questions".to_owned(), json!(total));
    ItemRecord {
        id: item.id.clone(),
        prompt: item.prompt(),
        response,
        judge_raw,
        verdict: json!(verdicts),
        decided_by: decided_by.to_owned(),
        scores,
        note,
        extra,
    }
}

/// The verdict list of a record (`null` entries are unparsed replies).
fn verdicts_of(it: &ItemRecord) -> Vec<Option<bool>> {
    it.verdict
        .as_array()
        .map(|a| a.iter().map(Value::as_bool).collect())
        .unwrap_or_default()
}

/// Headline DRFR overall, per subset and per label, with the counts behind them in
/// `details`; `unparsed` is the number of `None` verdicts.
pub fn summarize(items: &[ItemRecord]) -> Summary {
    let mut headline = vec![
        Headline::ratio("drfr", "InFoBench DRFR", items),
        Headline::ratio(Subset::Easy.key(), "InFoBench DRFR, Easy set", items),
        Headline::ratio(Subset::Hard.key(), "InFoBench DRFR, Hard set", items),
    ];
    let mut labels: Vec<String> = LABELS.iter().map(|s| s.to_string()).collect();
    let others: BTreeSet<&str> = items
        .iter()
        .flat_map(|it| it.scores.keys())
        .filter_map(|k| k.strip_prefix("drfr_label_"))
        .filter(|l| !LABELS.contains(l))
        .collect();
    labels.extend(others.into_iter().map(str::to_owned));
    for label in &labels {
        headline.push(Headline::ratio(
            &label_key(label),
            &format!("InFoBench DRFR, {label} questions"),
            items,
        ));
    }

    let (mut asked, mut yes, mut none, mut stopped, mut questions) = (0, 0, 0, 0, 0);
    let mut by_subset = serde_json::Map::new();
    for subset in [Subset::Easy, Subset::Hard] {
        let of: Vec<&ItemRecord> = items
            .iter()
            .filter(|it| it.extra.get("subset").and_then(Value::as_str) == Some(subset.as_str()))
            .collect();
        let (mut s_asked, mut s_questions) = (0, 0);
        for it in &of {
            let v = verdicts_of(it);
            let total = it
                .extra
                .get("questions")
                .and_then(Value::as_u64)
                .map_or(v.len(), |n| n as usize);
            s_asked += v.len();
            s_questions += total;
            yes += v.iter().filter(|x| **x == Some(true)).count();
            none += v.iter().filter(|x| x.is_none()).count();
            stopped += usize::from(v.len() < total);
        }
        asked += s_asked;
        questions += s_questions;
        by_subset.insert(
            subset.as_str().to_owned(),
            json!({ "items": of.len(), "questions": s_questions, "answered": s_asked }),
        );
    }
    let details = json!({
        "questions": questions,
        "answered": asked,
        "yes": yes,
        "no": asked - yes - none,
        "unparsed_replies": none,
        "not_asked": questions - asked,
        "instructions_stopped_early": stopped,
        "by_subset": by_subset,
        "counting": "DRFR = yes / answered; an unparsed reply counts as no and stops that instruction's remaining questions, which are not counted",
    });
    let mut summary = Summary::new(NAME, items.len(), headline, details);
    summary.unparsed = none;
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infobench::tests::item;

    #[test]
    fn unparsed_counts_as_no_and_unasked_drop_out() {
        let a = item(
            "user_oriented_task_1",
            "",
            &[
                ("Q1?", &["Content", "Format"]),
                ("Q2?", &["Number"]),
                ("Q3?", &["Style"]),
                ("Q4?", &["Style"]),
            ],
        );
        let b = item(
            "domain_oriented_task_1",
            "in",
            &[("Q1?", &["Content"]), ("Q2?", &["Linguistic"])],
        );
        let ra = record(
            &a,
            "out".into(),
            vec![Some(true), Some(false), None],
            vec!["Yes".into(), "No".into(), "Hmm".into()],
            "judge",
        );
        assert_eq!(ra.scores["drfr"], [1.0, 3.0]);
        assert_eq!(ra.scores["drfr_easy"], [1.0, 3.0]);
        assert_eq!(ra.scores["drfr_label_Content"], [1.0, 1.0]);
        assert_eq!(ra.scores["drfr_label_Format"], [1.0, 1.0]);
        assert_eq!(ra.scores["drfr_label_Number"], [0.0, 1.0]);
        assert_eq!(ra.scores["drfr_label_Style"], [0.0, 1.0]);
        assert!(!ra.scores.contains_key("drfr_hard"));
        assert_eq!(ra.verdict, json!([true, false, null]));
        assert!(
            ra.note.as_deref().unwrap().contains("reply 3"),
            "{:?}",
            ra.note
        );
        let rb = record(
            &b,
            "out".into(),
            vec![Some(true), Some(true)],
            vec![],
            "given",
        );
        assert_eq!(rb.scores["drfr_hard"], [2.0, 2.0]);
        assert_eq!(rb.note, None);
        assert_eq!(rb.prompt, "Instruction of domain_oriented_task_1.\n\nin\n");

        let s = summarize(&[ra, rb]);
        assert_eq!(s.benchmark, "infobench");
        assert_eq!(s.unparsed, 1);
        let drfr = s.metric("drfr").unwrap();
        assert_eq!((drfr.num, drfr.den), (Some(3.0), Some(5.0)));
        assert_eq!(s.metric("drfr_easy").unwrap().value, Some(1.0 / 3.0));
        assert_eq!(s.metric("drfr_hard").unwrap().value, Some(1.0));
        assert_eq!(s.metric("drfr_label_Style").unwrap().value, Some(0.0));
        assert_eq!(s.metric("drfr_label_Linguistic").unwrap().value, Some(1.0));
        assert_eq!(s.details["questions"], 6);
        assert_eq!(s.details["answered"], 5);
        assert_eq!(s.details["not_asked"], 1);
        assert_eq!(s.details["unparsed_replies"], 1);
        assert_eq!(s.details["instructions_stopped_early"], 1);
        assert_eq!(s.details["no"], 1);
        assert_eq!(s.details["by_subset"]["Hard_set"]["items"], 1);
    }
}
