//! Reading JSON Lines: one JSON value per non-blank line, parsed into the caller's type, with
//! every error naming the file and the 1-based line. Blank lines are skipped; an empty file is
//! an error, because every caller of this module reads data it cannot do without. Invalid
//! UTF-8 is reported with its line, not as a bare I/O error.
//!
//! This is for input files a person hands us. It is not a streaming parser for gigabyte logs:
//! rows are collected into a `Vec`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a JSONL file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: no rows")]
    Empty { path: PathBuf },
}

impl JsonlError {
    /// An error about one line of `path`, for callers that check rows after parsing them.
    pub fn at(path: &Path, line: usize, message: impl Into<String>) -> Self {
        JsonlError::Line {
            path: path.to_owned(),
            line,
            message: message.into(),
        }
    }
}

/// Reads every non-blank line of `path` as a `T`, paired with its 1-based line number.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<(usize, T)>, JsonlError> {
    let file = std::fs::File::open(path).map_err(|source| JsonlError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut rows = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| JsonlError::Io {
                path: path.to_owned(),
                source,
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let text = std::str::from_utf8(&buf).map_err(|e| {
            JsonlError::at(
                path,
                line_no,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        let text = text.trim_start_matches('\u{feff}');
        if text.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str(text)
            .map_err(|e| JsonlError::at(path, line_no, format!("{e} (column {})", e.column())))?;
        rows.push((line_no, row));
    }
    if rows.is_empty() {
        return Err(JsonlError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(rows)
}

/// [`read_jsonl`] into untyped JSON values.
pub fn read_jsonl_values(path: &Path) -> Result<Vec<(usize, Value)>, JsonlError> {
    read_jsonl(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Row {
        a: u32,
    }

    #[test]
    fn rows_keep_their_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(&p, "\u{feff}{\"a\":1}\n\n  \n{\"a\":2}\r\n{\"a\":3}").unwrap();
        let rows: Vec<(usize, Row)> = read_jsonl(&p).unwrap();
        assert_eq!(
            rows,
            vec![(1, Row { a: 1 }), (4, Row { a: 2 }), (5, Row { a: 3 })]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"a\":\"x\"}\n").unwrap();
        let err = read_jsonl::<Row>(&p).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:2:"), "{err}");

        std::fs::write(&p, b"{\"a\":1}\n{\"a\":\xff}\n").unwrap();
        let err = read_jsonl::<Row>(&p).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:2: invalid UTF-8"), "{err}");

        std::fs::write(&p, "\n\n").unwrap();
        assert!(matches!(
            read_jsonl::<Row>(&p),
            Err(JsonlError::Empty { .. })
        ));
        assert!(matches!(
            read_jsonl::<Row>(&dir.path().join("missing")),
            Err(JsonlError::Io { .. })
        ));
    }
}
