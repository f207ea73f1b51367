//! `run --batch` and `batch import` end to end: rounds of batch files answered by the test
//! kit in OpenAI's and vLLM's result forms (failures, lines out of order) finish the run with
//! the same files as a run that called the endpoint directly, without calling it once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use demorecon_testkit::batch::{Form, answer};

use super::pipeline::{
    assert_same_files, manifest, run_cmd, scripted_reply, scripted_server, write_seeds,
};
use super::{bin, ok};

fn jsonl_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_rounds_in_both_forms_finish_the_run_with_the_direct_runs_bytes() {
    let server = scripted_server(Duration::ZERO).await;
    let tmp = tempfile::tempdir().unwrap();
    let seeds = write_seeds(tmp.path());
    let direct = tmp.path().join("direct");
    ok(
        run_cmd(&server, &tmp.path().join("direct.sqlite"), &["run"])
            .arg(&seeds)
            .arg("-o")
            .arg(&direct)
            .output()
            .unwrap(),
    );
    let direct_calls = server.requests();
    assert!(direct_calls > 100, "{direct_calls}");

    let cache = tmp.path().join("batch.sqlite");
    let run = tmp.path().join("run");
    let mut failed_in = [0usize; 2];
    let mut rounds = 0;
    loop {
        assert!(rounds < 30, "the batch rounds do not converge");
        let dir = tmp.path().join(format!("batch-{rounds:02}"));
        let out = ok(run_cmd(&server, &cache, &["run"])
            .arg(&seeds)
            .arg("-o")
            .arg(&run)
            .arg("--batch")
            .arg(&dir)
            .output()
            .unwrap());
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("batch: no call left to send; the run is complete") {
            break;
        }
        assert!(err.contains("request(s) for"), "{err}");
        let inputs = jsonl_files(&dir);
        assert!(!inputs.is_empty(), "{err}");
        let form = if rounds % 2 == 0 {
            Form::OpenAi
        } else {
            Form::Vllm
        };
        let results = answer(
            &inputs,
            &tmp.path().join(format!("results-{rounds:02}")),
            form,
            rounds,
            4,
            scripted_reply,
        )
        .unwrap();
        failed_in[(form == Form::Vllm) as usize] += results.failed;
        let out = ok(bin()
            .arg("--cache")
            .arg(&cache)
            .args(["batch", "import"])
            .args(&results.files)
            .output()
            .unwrap());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "{} answer(s) imported from {} line(s)",
                results.answered,
                results.answered + results.failed
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "{} failed, 0 unknown, 0 malformed",
                results.failed
            )),
            "{err}"
        );
        rounds += 1;
    }
    eprintln!("{rounds} rounds; failed lines (OpenAI, vLLM): {failed_in:?}");
    assert!(rounds >= 5, "one round per stage at least, saw {rounds}");
    assert!(
        failed_in[0] > 0 && failed_in[1] > 0,
        "failures in both forms: {failed_in:?}"
    );
    assert_eq!(
        server.requests(),
        direct_calls,
        "batch rounds never call the endpoint"
    );
    assert_same_files(&direct, &run);
    assert_eq!(manifest(&run)["counts"]["seeds_pending"], 0);
}
