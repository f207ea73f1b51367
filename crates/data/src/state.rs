//! The run folder's state store: `RUN/state.sqlite`, the source of truth for a run.
//!
//! Each finished unit of work (a stage's result for one seed or one variant) is one row,
//! committed in its own transaction the moment it is known, keyed `(unit, stage)`. A killed
//! process therefore loses at most the work in flight; a rerun reads what is there and does
//! the rest. Rows are written once and never changed, so a result seen once is the result
//! for good. The files a user reads are rebuilt from this store in input order, which is
//! what makes the outputs byte-identical whatever order the work finished in.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::records::Seed;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path}: cannot create the run folder: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Mismatch(String),
}

/// File name of the store inside a run folder.
pub const STATE_FILE: &str = "state.sqlite";

pub struct RunState {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState")
            .field("path", &self.path)
            .finish()
    }
}

impl RunState {
    /// Opens the store of run folder `dir`, creating folder and store if needed.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_owned(),
            source,
        })?;
        Self::open_file(&dir.join(STATE_FILE), true)
    }

    /// Opens an existing run folder's store; an error if there is none.
    pub fn open_existing(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(STATE_FILE);
        if !path.is_file() {
            return Err(StateError::Mismatch(format!(
                "{} is not a run folder (no {STATE_FILE}); start one with `demorecon run SEEDS -o {}`",
                dir.display(),
                dir.display()
            )));
        }
        Self::open_file(&path, false)
    }

    fn open_file(path: &Path, create: bool) -> Result<Self, StateError> {
        let err = |source| StateError::Db {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(err)?;
        // WAL + NORMAL: a commit survives the process being killed (not a power cut), and
        // commits cost no fsync, which matters at thousands of results a second.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        if create {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS seeds (
                     idx INTEGER PRIMARY KEY, seed_id TEXT NOT NULL UNIQUE, json TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS results (
                     unit TEXT NOT NULL, stage TEXT NOT NULL, json TEXT NOT NULL,
                     PRIMARY KEY (unit, stage));",
            )
            .map_err(err)?;
        }
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn db(&self, source: rusqlite::Error) -> StateError {
        StateError::Db {
            path: self.path.clone(),
            source,
        }
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        self.conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.db(e))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.conn()
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(|e| self.db(e))
    }

    /// Stores the run's seeds in input order, all in one transaction. A store that already has
    /// seeds keeps them; the caller compares digests to refuse a different seed file.
    pub fn ingest(&self, seeds: &[Seed]) -> Result<bool, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.db(e))?;
        let existing: i64 = tx
            .query_row("SELECT COUNT(*) FROM seeds", [], |r| r.get(0))
            .map_err(|e| self.db(e))?;
        if existing > 0 {
            return Ok(false);
        }
        {
            let mut stmt = tx
                .prepare("INSERT INTO seeds (idx, seed_id, json) VALUES (?1, ?2, ?3)")
                .map_err(|e| self.db(e))?;
            for (idx, seed) in seeds.iter().enumerate() {
                let json = serde_json::to_string(seed).expect("seeds serialise");
                stmt.execute(params![idx as i64, seed.id, json])
                    .map_err(|e| self.db(e))?;
            }
        }
        tx.commit().map_err(|e| self.db(e))?;
        Ok(true)
    }

    /// The run's seeds in input order.
    pub fn seeds(&self) -> Result<Vec<Seed>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT json FROM seeds ORDER BY idx")
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.db(e))?;
        let mut seeds = Vec::new();
        for row in rows {
            let json = row.map_err(|e| self.db(e))?;
            seeds.push(serde_json::from_str(&json).map_err(|e| {
                StateError::Mismatch(format!(
                    "{}: a stored seed is unreadable: {e}",
                    self.path.display()
                ))
            })?);
        }
        Ok(seeds)
    }

    /// A finished result, if there is one.
    pub fn get(&self, unit: &str, stage: &str) -> Result<Option<Value>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT json FROM results WHERE unit = ?1 AND stage = ?2")
            .map_err(|e| self.db(e))?;
        let json: Option<String> = stmt
            .query_row(params![unit, stage], |r| r.get(0))
            .optional()
            .map_err(|e| self.db(e))?;
        json.map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| {
                StateError::Mismatch(format!("{}: {unit} {stage}: {e}", self.path.display()))
            })
    }

    /// Records a result. The first write wins: results are facts, never revised, so a racing
    /// second write of the same unit is ignored and the stored value is returned.
    pub fn put(&self, unit: &str, stage: &str, value: &Value) -> Result<Value, StateError> {
        let json = serde_json::to_string(value).expect("values serialise");
        let conn = self.conn();
        let inserted = conn
            .prepare_cached("INSERT OR IGNORE INTO results (unit, stage, json) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![unit, stage, json]))
            .map_err(|e| self.db(e))?;
        drop(conn);
        if inserted == 1 {
            Ok(value.clone())
        } else {
            Ok(self.get(unit, stage)?.unwrap_or_else(|| value.clone()))
        }
    }

    /// Forgets results so they are made again (`--retry-quarantined`).
    pub fn remove(&self, units: &[(String, String)]) -> Result<usize, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.db(e))?;
        let mut n = 0;
        for (unit, stage) in units {
            n += tx
                .execute(
                    "DELETE FROM results WHERE unit = ?1 AND stage = ?2",
                    params![unit, stage],
                )
                .map_err(|e| self.db(e))?;
        }
        tx.commit().map_err(|e| self.db(e))?;
        Ok(n)
    }

    /// Every result, as `(unit, stage, value)`, in key order.
    pub fn all_results(&self) -> Result<Vec<(String, String, Value)>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT unit, stage, json FROM results ORDER BY unit, stage")
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.db(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (unit, stage, json) = row.map_err(|e| self.db(e))?;
            let value = serde_json::from_str(&json).map_err(|e| {
                StateError::Mismatch(format!("{}: {unit} {stage}: {e}", self.path.display()))
            })?;
            out.push((unit, stage, value));
        }
        Ok(out)
    }

    /// Copies `other`'s results into this store (for `merge`). A unit both hold must hold the
    /// same value; anything else means the runs were not made from one command.
    pub fn absorb(&self, other: &RunState) -> Result<usize, StateError> {
        let theirs = other.all_results()?;
        let mut added = 0;
        for (unit, stage, value) in theirs {
            let stored = self.put(&unit, &stage, &value)?;
            if stored != value {
                return Err(StateError::Mismatch(format!(
                    "{} and {} disagree on {unit} ({stage}): were they made with the same options and models?",
                    self.path.display(),
                    other.path.display()
                )));
            }
            added += 1;
        }
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed(id: &str) -> Seed {
        Seed {
            id: id.into(),
            instruction: format!("do {id}"),
            input: None,
            response: None,
            line: 1,
        }
    }

    #[test]
    fn results_survive_reopen_and_first_write_wins() {
        let dir = tempfile::tempdir().unwrap();
        {
            let state = RunState::open(dir.path()).unwrap();
            assert!(state.ingest(&[seed("b"), seed("a")]).unwrap());
            assert!(!state.ingest(&[seed("c")]).unwrap(), "seeds are kept");
            state.put("b", "filter", &json!({"keep": true})).unwrap();
            let kept = state.put("b", "filter", &json!({"keep": false})).unwrap();
            assert_eq!(kept, json!({"keep": true}));
            state.set_meta("options", "x").unwrap();
        }
        let state = RunState::open_existing(dir.path()).unwrap();
        let ids: Vec<_> = state.seeds().unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["b", "a"], "input order");
        assert_eq!(
            state.get("b", "filter").unwrap(),
            Some(json!({"keep": true}))
        );
        assert_eq!(state.get("a", "filter").unwrap(), None);
        assert_eq!(state.meta("options").unwrap().as_deref(), Some("x"));
        assert_eq!(state.remove(&[("b".into(), "filter".into())]).unwrap(), 1);
        assert_eq!(state.get("b", "filter").unwrap(), None);
    }

    #[test]
    fn absorb_refuses_disagreement() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (
            RunState::open(d1.path()).unwrap(),
            RunState::open(d2.path()).unwrap(),
        );
        a.put("s", "filter", &json!(1)).unwrap();
        b.put("s", "filter", &json!(1)).unwrap();
        b.put("t", "filter", &json!(2)).unwrap();
        assert_eq!(a.absorb(&b).unwrap(), 2);
        b.put("u", "x", &json!(3)).unwrap();
        a.put("u", "x", &json!(4)).unwrap();
        assert!(a.absorb(&b).is_err());
    }

    #[test]
    fn a_folder_without_state_is_not_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let err = RunState::open_existing(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a run folder"), "{err}");
    }
}
