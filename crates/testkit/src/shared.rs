//! The shared benchmark data the tests read in place (never copied into the repo).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `$DEMORECON_SHARED_DATA`, else `../shared/data` beside the repository checkout.
pub fn shared_data() -> PathBuf {
    if let Some(dir) = std::env::var_os("DEMORECON_SHARED_DATA").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    assert!(
        dir.join("ifeval").is_dir(),
        "shared benchmark data not found at {} (set DEMORECON_SHARED_DATA)",
        dir.display()
    );
    dir
}

/// Every non-blank line of a JSONL file, parsed; panics naming the file on any error.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}
