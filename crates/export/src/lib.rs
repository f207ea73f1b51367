//! `demorecon export`: a finished run folder as folders that TRL, LLaMA-Factory, axolotl and
//! OpenRLHF load as they are — each trainer's own SFT, DPO and KTO row shapes (FGIV-A, FGIV-R
//! and both mixed), a ready SFT+DPO config in that trainer's words with one `--sft-weight`
//! mapped onto it, Parquet twins of every JSONL file, and a Hugging Face dataset card.
//!
//! It reads only what a run publishes ([`run`]): the datasets `build` chose and the
//! manifest; it never opens `state.sqlite`, never calls a model and never re-decides which
//! pairs are valid. An unfinished run is refused with its pending units listed, unless the
//! caller asks for a partial export, which the card then announces.

pub mod card;
pub mod error;
pub mod parquet_out;
pub mod rows;
pub mod run;
pub mod trainers;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use demorecon_io::{AtomicJsonl, write_atomic, write_json_pretty};
use serde::Serialize;
use serde_json::{Value, json};

pub use error::{ExportError, Pending, Unfinished};
pub use trainers::{Folder, TrainOptions, Trainer};

/// What to export and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub trainers: Vec<Trainer>,
    /// Export what is final from an unfinished run instead of refusing.
    pub partial: bool,
    pub train: TrainOptions,
    /// The seeds' licence (an SPDX-style id such as `cc-by-4.0`); else taken from the
    /// manifest's `input.license` if the run records one, else `other`.
    pub license: Option<String>,
}

/// What was written for one trainer.
#[derive(Debug, Clone, Serialize)]
pub struct FolderReport {
    pub trainer: &'static str,
    pub dir: PathBuf,
    /// Rows per data file stem.
    pub rows: BTreeMap<String, usize>,
    pub configs: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub folders: Vec<FolderReport>,
    /// Pending units left out, when the export is partial.
    pub partial: bool,
    pub pending_units: usize,
}

/// Exports run folder `run_dir` into `out`: `out` itself for one trainer, `out/{trainer}`
/// for several.
pub fn export(
    run_dir: &Path,
    out: &Path,
    opts: &ExportOptions,
) -> Result<ExportReport, ExportError> {
    if same_dir(run_dir, out) {
        return Err(ExportError::Usage(format!(
            "{} is the run folder itself; export into another folder",
            out.display()
        )));
    }
    let run = run::read_run(run_dir)?;
    let partial = match (run.unfinished.is_empty(), opts.partial) {
        (true, _) => None,
        (false, true) => Some(&run.unfinished),
        (false, false) => {
            return Err(ExportError::Unfinished {
                run: run_dir.to_owned(),
                unfinished: run.unfinished,
            });
        }
    };
    if run.pairs.is_empty() {
        return Err(ExportError::bad(
            &run_dir.join("datasets"),
            "dpo_fgiv_a.jsonl and dpo_fgiv_r.jsonl have no rows: there is nothing to train on \
             (did every pair fail verification? `demorecon build --keep-unverified` keeps them)",
        ));
    }
    let recorded = run.manifest["input"]["license"].as_str();
    let provenance = card::Provenance {
        manifest: &run.manifest,
        license: opts.license.as_deref().or(recorded),
        partial,
    };
    let mut folders = Vec::new();
    for &trainer in &opts.trainers {
        let dir = if opts.trainers.len() == 1 {
            out.to_owned()
        } else {
            out.join(trainer.name())
        };
        let folder = trainer.folder(&run, &opts.train);
        folders.push(write_folder(&dir, &folder, &provenance, &opts.train)?);
    }
    Ok(ExportReport {
        folders,
        partial: partial.is_some(),
        pending_units: partial.map_or(0, |u| u.pending.len()),
    })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn write_jsonl(path: &Path, rows: &[Value]) -> Result<(), ExportError> {
    let io = |e| ExportError::io(path, e);
    let mut out = AtomicJsonl::create(path).map_err(io)?;
    for row in rows {
        out.push(row).map_err(io)?;
    }
    out.commit().map_err(io)?;
    Ok(())
}

/// Writes one trainer's folder: data files (JSONL, and Parquet when there are rows), configs,
/// `export.json` and the card.
pub fn write_folder(
    dir: &Path,
    folder: &Folder,
    provenance: &card::Provenance<'_>,
    train: &TrainOptions,
) -> Result<FolderReport, ExportError> {
    std::fs::create_dir_all(dir).map_err(|e| ExportError::io(dir, e))?;
    let mut rows = BTreeMap::new();
    for file in &folder.data {
        write_jsonl(&dir.join(format!("{}.jsonl", file.stem)), &file.rows)?;
        let parquet = dir.join(format!("{}.parquet", file.stem));
        if file.rows.is_empty() {
            // A Parquet file from an earlier export would now disagree with the JSONL.
            let _ = std::fs::remove_file(&parquet);
        } else {
            parquet_out::write_parquet(&parquet, &file.rows)?;
        }
        rows.insert(file.stem.clone(), file.rows.len());
    }
    for (name, text) in &folder.configs {
        let path = dir.join(name);
        write_atomic(&path, text.as_bytes()).map_err(|e| ExportError::io(&path, e))?;
    }
    let summary = json!({
        "trainer": folder.trainer.name(),
        "partial": provenance.partial.is_some(),
        "pending_units": provenance.partial.map(|u| u.pending.iter().map(|p| format!("{} {}", p.stage, p.unit)).collect::<Vec<_>>()),
        "sft_weight": train.sft_weight,
        "beta": train.beta,
        "model": train.model,
        "rows": rows,
        "configs": folder.configs.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "source": {
            "tool": provenance.manifest["tool"],
            "seeds_blake3": provenance.manifest["input"]["seeds_blake3"],
        },
    });
    let path = dir.join("export.json");
    write_json_pretty(&path, &summary).map_err(|e| ExportError::io(&path, e))?;
    let readme = dir.join("README.md");
    write_atomic(&readme, card::card(folder, provenance).as_bytes())
        .map_err(|e| ExportError::io(&readme, e))?;
    Ok(FolderReport {
        trainer: folder.trainer.name(),
        dir: dir.to_owned(),
        rows,
        configs: folder.configs.iter().map(|(n, _)| n.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::tests::fixture;

    fn opts(trainers: Vec<Trainer>) -> ExportOptions {
        ExportOptions {
            trainers,
            partial: false,
            train: TrainOptions {
                sft_weight: 0.5,
                beta: 0.1,
                model: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
                template: "smollm2".into(),
            },
            license: None,
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn jsonl(path: &Path) -> Vec<Value> {
        read(path)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn all_trainers_get_their_own_folder_rows_configs_and_card() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        fixture(&run);
        let out = tmp.path().join("out");
        let report = export(&run, &out, &opts(Trainer::ALL.to_vec())).unwrap();
        assert_eq!(report.folders.len(), 4);
        assert!(!report.partial);

        // TRL: explicit-prompt conversational rows; KTO doubles the pairs.
        let trl = out.join("trl");
        let dpo = jsonl(&trl.join("dpo_mixed.jsonl"));
        assert_eq!(dpo.len(), 5);
        assert_eq!(dpo[0]["prompt"][0]["role"], "user");
        assert_eq!(dpo[0]["chosen"][0]["content"], "A direct");
        assert_eq!(dpo[0]["rejected"][0]["content"], "Seed one");
        let kto = jsonl(&trl.join("kto_fgiv_a.jsonl"));
        assert_eq!(kto.len(), 6);
        assert_eq!(
            (kto[0]["label"].clone(), kto[1]["label"].clone()),
            (json!(true), json!(false))
        );
        assert_eq!(kto[1]["completion"][0]["content"], "Seed one");
        assert_eq!(jsonl(&trl.join("sft_mixed.jsonl")).len(), 3);
        let config = read(&trl.join("dpo_sft.yaml"));
        assert!(config.contains("loss_type: [sigmoid, sft]"), "{config}");
        assert!(config.contains("loss_weights: [1.0, 0.5]"), "{config}");
        assert!(trl.join("dpo_mixed.parquet").exists());

        // LLaMA-Factory: dataset_info.json describes each file.
        let lf = out.join("llama-factory");
        let info: Value = serde_json::from_str(&read(&lf.join("dataset_info.json"))).unwrap();
        let dpo_info = &info["demorecon_dpo_fgiv_r"];
        assert_eq!(dpo_info["ranking"], true);
        assert_eq!(dpo_info["formatting"], "sharegpt");
        assert_eq!(dpo_info["tags"]["role_tag"], "role");
        assert_eq!(info["demorecon_kto_mixed"]["columns"]["kto_tag"], "label");
        assert!(info.get("demorecon_fgiv_eval").is_none());
        let row = &jsonl(&lf.join("dpo_fgiv_r.jsonl"))[0];
        assert_eq!(row["chosen"]["content"], "R revised");
        let kto = &jsonl(&lf.join("kto_mixed.jsonl"))[1];
        assert_eq!(kto["messages"][1]["content"], "Seed one");
        assert!(read(&lf.join("dpo_sft.yaml")).contains("pref_ftx: 0.5"));

        // axolotl and OpenRLHF configs carry the same weight in their own words.
        assert!(read(&out.join("openrlhf/train_dpo_sft.sh")).contains("--model.nll_loss_coef 0.5"));
        assert!(!out.join("openrlhf/kto_mixed.jsonl").exists());

        // The card: metadata, configs pointing at Parquet, provenance, licence.
        let card = read(&trl.join("README.md"));
        assert!(card.starts_with("---\nlicense: other\n"), "{card}");
        assert!(
            card.contains("- config_name: dpo_mixed\n  default: true\n"),
            "{card}"
        );
        assert!(card.contains("path: dpo_fgiv_a.parquet"), "{card}");
        assert!(card.contains("split: test"), "{card}");
        assert!(card.contains("| pairs_valid_fgiv_r | 2 |"), "{card}");
        assert!(card.contains("`generator`: gen@http://x"), "{card}");
        assert!(!card.contains("Partial export"));
    }

    #[test]
    fn one_trainer_writes_into_the_folder_itself_with_the_licence_given() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        fixture(&run);
        let out = tmp.path().join("out");
        let mut o = opts(vec![Trainer::Axolotl]);
        o.license = Some("cc-by-4.0".into());
        export(&run, &out, &o).unwrap();
        assert!(out.join("dpo_mixed.jsonl").exists());
        assert!(read(&out.join("README.md")).starts_with("---\nlicense: cc-by-4.0\n"));
        let err = export(&run, &run, &o).unwrap_err();
        assert!(err.to_string().contains("run folder itself"), "{err}");
    }

    #[test]
    fn unfinished_runs_fail_with_their_pending_units_unless_partial() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        fixture(&run);
        std::fs::remove_file(run.join("verdicts.jsonl")).unwrap();
        let out = tmp.path().join("out");
        let err = export(&run, &out, &opts(vec![Trainer::Trl]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("verdicts.jsonl is missing"), "{err}");
        assert!(err.contains("verify s1/v0"), "{err}");
        assert!(err.contains("--partial"), "{err}");
        assert!(!out.exists());

        let mut o = opts(vec![Trainer::Trl]);
        o.partial = true;
        let report = export(&run, &out, &o).unwrap();
        assert!(report.partial);
        assert_eq!(report.pending_units, 3);
        let card = read(&out.join("README.md"));
        assert!(card.contains("**Partial export.**"), "{card}");
        let summary: Value = serde_json::from_str(&read(&out.join("export.json"))).unwrap();
        assert_eq!(summary["partial"], true);
    }
}
