//! Finding the IFEval prompt file: a path the user gave, the copy kept under the data home, or
//! a one-time download of the official file from the Hugging Face Hub, checked by sha256.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{EvalError, INPUT_DATA_SHA256};

/// Where `google/IFEval` serves its prompt file.
pub const INPUT_DATA_URL: &str =
    "https://huggingface.co/datasets/google/IFEval/resolve/main/ifeval_input_data.jsonl";

/// Where the prompt file is kept: `<data_home>/data/ifeval/input_data.jsonl`.
pub fn default_input_path(data_home: &Path) -> PathBuf {
    data_home
        .join("data")
        .join("ifeval")
        .join("input_data.jsonl")
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Returns `dest` if it exists; otherwise downloads the official prompt file, checks its
/// sha256 and stores it at `dest`. Any failure (offline, HTTP error, wrong digest) is an error
/// that tells the user to pass `--input`.
pub async fn ensure_input_data(dest: &Path) -> Result<PathBuf, EvalError> {
    if dest.is_file() {
        return Ok(dest.to_owned());
    }
    let hint = |why: String| {
        EvalError::Fetch(format!(
            "no IFEval prompt file at {} and downloading it failed ({why}); pass --input FILE \
             (e.g. input_data.jsonl from google-research/instruction_following_eval)",
            dest.display()
        ))
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| hint(e.to_string()))?;
    let resp = client
        .get(INPUT_DATA_URL)
        .send()
        .await
        .map_err(|e| hint(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(hint(format!(
            "HTTP {} from {INPUT_DATA_URL}",
            resp.status()
        )));
    }
    let bytes = resp.bytes().await.map_err(|e| hint(e.to_string()))?;
    let digest = sha256_hex(&bytes);
    if digest != INPUT_DATA_SHA256 {
        return Err(hint(format!(
            "sha256 {digest} differs from the expected {INPUT_DATA_SHA256}"
        )));
    }
    demorecon_io::write_atomic(dest, &bytes).map_err(|source| EvalError::Write {
        path: dest.into(),
        source,
    })?;
    Ok(dest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn existing_file_is_used_without_network() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_input_path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{}\n").unwrap();
        assert_eq!(ensure_input_data(&path).await.unwrap(), path);
    }
}
