//! The dataset card (`README.md`) of an export folder: Hugging Face card metadata in YAML
//! front matter (licence, task categories, size category, and `configs` that point every
//! config's `train`/`test` split at its Parquet file, so `datasets.load_dataset(DIR)` and
//! `load_dataset(DIR, "dpo_fgiv_a")` work), then how the data was made — models, prompt
//! versions and counts, all from the run's manifest — and how to train on it.
//!
//! It describes files already chosen; it writes nothing itself.

use serde_json::{Value, json};

use crate::error::Unfinished;
use crate::rows::{Fgiv, Mix};
use crate::trainers::{DataFile, Folder, Kind};
use crate::yaml::to_yaml;

/// What the card says about where the data came from.
pub struct Provenance<'a> {
    pub manifest: &'a Value,
    pub license: Option<&'a str>,
    /// `Some` when the run was unfinished and exported with `--partial`.
    pub partial: Option<&'a Unfinished>,
}

/// The default config: the mixed preference set.
pub const DEFAULT_CONFIG: &str = "dpo_mixed";

fn size_category(n: usize) -> &'static str {
    match n {
        0..1_000 => "n<1K",
        1_000..10_000 => "1K<n<10K",
        10_000..100_000 => "10K<n<100K",
        100_000..1_000_000 => "100K<n<1M",
        _ => "1M<n<10M",
    }
}

fn split(kind: Kind) -> &'static str {
    if kind == Kind::Eval { "test" } else { "train" }
}

fn configs(data: &[DataFile]) -> Vec<Value> {
    data.iter()
        .filter(|f| !f.rows.is_empty())
        .map(|f| {
            let mut c = json!({"config_name": f.stem});
            if f.stem == DEFAULT_CONFIG {
                c["default"] = json!(true);
            }
            c["data_files"] =
                json!([{"split": split(f.kind), "path": format!("{}.parquet", f.stem)}]);
            c
        })
        .collect()
}

/// The licence fields: the seeds' stated terms when known, else `other` (with a sentence in
/// the card body).
fn license_fields(meta: &mut Value, license: Option<&str>) {
    match license {
        Some(id) => meta["license"] = json!(id),
        None => {
            meta["license"] = json!("other");
            meta["license_name"] = json!("seed-terms-unstated");
        }
    }
}

fn front_matter(folder: &Folder, p: &Provenance<'_>) -> String {
    let largest = folder.data.iter().map(|f| f.rows.len()).max().unwrap_or(0);
    let mut meta = json!({});
    license_fields(&mut meta, p.license);
    meta["task_categories"] = json!(["text-generation"]);
    meta["tags"] = json!([
        "dpo",
        "kto",
        "sft",
        "instruction-following",
        "demorecon",
        folder.trainer.name()
    ]);
    meta["size_categories"] = json!([size_category(largest)]);
    meta["pretty_name"] = json!(format!(
        "DeMoRecon FGIV data for {}",
        folder.trainer.title()
    ));
    meta["configs"] = json!(configs(&folder.data));
    format!("---\n{}---\n", to_yaml(&meta))
}

fn describe(f: &DataFile) -> String {
    let set = match f.mix {
        Some(Mix::Only(Fgiv::A)) => "FGIV-A (variant answered directly)",
        Some(Mix::Only(Fgiv::R)) => "FGIV-R (seed response revised for the variant)",
        Some(Mix::Mixed) => "FGIV-A and FGIV-R together",
        None => "held-out FGIV-Eval prompts (no responses)",
    };
    let what = match f.kind {
        Kind::Dpo => {
            "preference pairs: chosen = verified variant response, rejected = the seed's response"
        }
        Kind::Kto => {
            "one row per response: verified variant response desirable, seed response undesirable"
        }
        Kind::Sft => "conversations ending in the response to learn (seed rows included)",
        Kind::Eval => "evaluation",
    };
    format!("| `{}` | {} | {set}; {what} |", f.stem, f.rows.len())
}

fn files_table(data: &[DataFile]) -> String {
    let mut lines = vec![
        "| config / file stem | rows | contents |".to_owned(),
        "|---|---|---|".to_owned(),
    ];
    lines.extend(data.iter().map(describe));
    let empty: Vec<&str> = data
        .iter()
        .filter(|f| f.rows.is_empty())
        .map(|f| f.stem.as_str())
        .collect();
    let mut out = lines.join("\n");
    if !empty.is_empty() {
        out.push_str(&format!(
            "\n\nEmpty, so written as JSONL only and left out of `configs`: {}.",
            empty.join(", ")
        ));
    }
    out
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        // A model identity: `model` (kind, detail).
        Value::Object(o) if o.get("model").is_some_and(Value::is_string) => {
            let extra: Vec<&str> = ["kind", "detail"]
                .iter()
                .filter_map(|k| o.get(*k).and_then(Value::as_str))
                .filter(|s| !s.is_empty())
                .collect();
            format!("{} ({})", compact(&o["model"]), extra.join(", "))
        }
        other => other.to_string(),
    }
}

fn map_lines(v: &Value) -> String {
    match v.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("- `{k}`: {}", compact(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => "- (not recorded)".into(),
    }
}

fn provenance(p: &Provenance<'_>) -> String {
    let m = p.manifest;
    let counts = [
        "seeds_in",
        "seeds_filtered_out",
        "seeds_quarantined",
        "seeds_done",
        "seeds_pending",
        "variants",
        "variants_valid",
        "variants_pending",
        "responses_fgiv_a",
        "responses_fgiv_r",
        "pairs_valid_fgiv_a",
        "pairs_valid_fgiv_r",
        "fgiv_eval_seeds",
    ];
    let counts: Vec<String> = counts
        .iter()
        .filter(|k| !m["counts"][**k].is_null())
        .map(|k| format!("| {k} | {} |", compact(&m["counts"][*k])))
        .collect();
    format!(
        "Made with {tool} {version} by the DeMoRecon pipeline (arXiv 2406.11301): each seed instruction \
is decomposed into sub-instructions, one sub-instruction at a time is minimally modified into a variant, \
the variant is answered directly (FGIV-A) and by revising the seed's response (FGIV-R), and each pair is \
verified (code checks, else a judge). The seed's own response is the hard negative for its variants. \
Seeds: `{seeds}` (blake3 `{digest}`).\n\n**Models**\n\n{models}\n\n**Prompt versions**\n\n{prompts}\n\n\
**Counts** (from the run's `manifest.json`)\n\n| count | value |\n|---|---|\n{counts}\n",
        tool = compact(&m["tool"]["name"]),
        version = compact(&m["tool"]["version"]),
        seeds = compact(&m["input"]["seeds"]),
        digest = compact(&m["input"]["seeds_blake3"]),
        models = map_lines(&m["models"]),
        prompts = map_lines(&m["prompts"]),
        counts = counts.join("\n"),
    )
}

fn license_text(license: Option<&str>) -> String {
    match license {
        Some(id) => format!(
            "`{id}`, as stated for the seed instructions. Generated responses may carry the terms of the models that wrote them (see Models)."
        ),
        None => "`other`: the run records no licence for its seed instructions, so this card claims none. \
The data inherits the terms of the seed file and of the models that generated the responses; check both \
before you publish or train on it, and pass `--license ID` to `demorecon export` once you know them."
            .into(),
    }
}

fn partial_text(u: &Unfinished) -> String {
    format!(
        "> **Partial export.** The run was not finished when this was exported (`--partial`): only \
units that were final are here, and the counts below are the run's, not this folder's.\n>\n{}\n\n",
        u.describe(10)
            .lines()
            .map(|l| format!("> {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// The card's full text.
pub fn card(folder: &Folder, p: &Provenance<'_>) -> String {
    let partial = p.partial.map(partial_text).unwrap_or_default();
    format!(
        "{front}\n# DeMoRecon FGIV data — {title} export\n\n{partial}Fine-grained instruction variants \
(FGIV) in {title}'s own formats. `datasets.load_dataset(\"THIS_FOLDER\")` loads the `{default}` config; name \
another config to load it. Every row carries `seed_id`, `variant_id` and `fgiv` back to the run.\n\n\
## Files\n\n{files}\n\nEach config is a JSONL file (what {title} reads) with a Parquet twin of the same \
rows (what the `configs` above point at).\n\n## How to train with {title}\n\n{how}\n## How it was made\n\n\
{made}\n## Licence\n\n{license}\n",
        front = front_matter(folder, p),
        title = folder.trainer.title(),
        default = DEFAULT_CONFIG,
        files = files_table(&folder.data),
        how = folder.how_to_train,
        made = provenance(p),
        license = license_text(p.license),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_categories_follow_the_hub_buckets() {
        assert_eq!(size_category(0), "n<1K");
        assert_eq!(size_category(999), "n<1K");
        assert_eq!(size_category(1_000), "1K<n<10K");
        assert_eq!(size_category(250_000), "100K<n<1M");
    }

    #[test]
    fn model_identities_read_as_names() {
        let id = json!({"kind": "openai", "model": "gpt-x", "detail": ""});
        assert_eq!(compact(&id), "gpt-x (openai)");
        assert_eq!(compact(&json!(3)), "3");
    }

    #[test]
    fn no_licence_means_other_with_a_reason() {
        let mut meta = json!({});
        license_fields(&mut meta, None);
        assert_eq!(meta["license"], "other");
        assert!(license_text(None).contains("records no licence"));
        license_fields(&mut meta, Some("cc-by-4.0"));
        assert_eq!(meta["license"], "cc-by-4.0");
    }
}
