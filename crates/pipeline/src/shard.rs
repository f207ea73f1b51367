//! Which part of the seeds one process does: `--shard I/N`, or `--shard auto` read from the
//! scheduler that started the process — a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, with
//! the count given as `--shards N`) or a Slurm job array (`SLURM_ARRAY_TASK_ID`,
//! `SLURM_ARRAY_TASK_MIN`, `SLURM_ARRAY_TASK_COUNT`; indices need not start at 0).
//!
//! A seed belongs to shard `hash(seed_id) mod N`, so the split does not depend on input order
//! or on how many seeds there are. This module does not merge shards (that is
//! [`crate::run_folder::merge`]) and reads no environment itself: callers pass a lookup.

use serde::Serialize;

/// `--shard i/n`: this process does the seeds whose id hashes to `i` modulo `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard wants I/N with 0 <= I < N, got {s:?}");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    pub fn contains(&self, seed_id: &str) -> bool {
        let h = blake3::hash(seed_id.as_bytes());
        let v = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
        v % u64::from(self.count) == u64::from(self.index)
    }
}

/// What `--shard` said: a shard, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSpec {
    Fixed(Shard),
    Auto,
}

impl std::str::FromStr for ShardSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "auto" {
            return Ok(ShardSpec::Auto);
        }
        s.parse().map(ShardSpec::Fixed).map_err(|e: String| {
            format!("{e} or `auto` (from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID)")
        })
    }
}

/// The Kubernetes Indexed Job variable.
pub const K8S_INDEX: &str = "JOB_COMPLETION_INDEX";
/// The Slurm job array variables.
pub const SLURM_ID: &str = "SLURM_ARRAY_TASK_ID";
pub const SLURM_MIN: &str = "SLURM_ARRAY_TASK_MIN";
pub const SLURM_COUNT: &str = "SLURM_ARRAY_TASK_COUNT";
pub const SLURM_STEP: &str = "SLURM_ARRAY_TASK_STEP";

impl ShardSpec {
    /// The shard this process does. `shards` is `--shards N`: required on Kubernetes (a pod
    /// knows its index, not the Job's completions), checked against the array on Slurm, and
    /// checked against `I/N` when given with a fixed shard. `env` looks a variable up.
    pub fn resolve(
        self,
        shards: Option<u32>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Shard, String> {
        let shard = match self {
            ShardSpec::Fixed(s) => s,
            ShardSpec::Auto => from_env(shards, &env)?,
        };
        match shards {
            Some(n) if n != shard.count => Err(format!(
                "--shards {n} disagrees with shard {shard}, which has {} shards",
                shard.count
            )),
            _ => Ok(shard),
        }
    }
}

/// Resolves `--shard`/`--shards` when either is given; `None` for an unsharded run.
pub fn resolve(
    spec: Option<ShardSpec>,
    shards: Option<u32>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Shard>, String> {
    match (spec, shards) {
        (Some(spec), _) => spec.resolve(shards, env).map(Some),
        (None, Some(_)) => Err("--shards N goes with --shard auto".into()),
        (None, None) => Ok(None),
    }
}

fn number(env: &impl Fn(&str) -> Option<String>, var: &str) -> Result<Option<u32>, String> {
    env(var)
        .map(|v| {
            v.trim().parse::<u32>().map_err(|_| {
                format!("--shard auto: {var}={v:?} is not a non-negative whole number")
            })
        })
        .transpose()
}

fn from_env(shards: Option<u32>, env: &impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
    let k8s = number(env, K8S_INDEX)?;
    let slurm = number(env, SLURM_ID)?;
    match (k8s, slurm) {
        (Some(_), Some(_)) => Err(format!(
            "--shard auto: both {K8S_INDEX} (Kubernetes) and {SLURM_ID} (Slurm) are set; pass --shard I/N"
        )),
        (Some(index), None) => kubernetes(index, shards),
        (None, Some(id)) => slurm_array(id, env),
        (None, None) => Err(format!(
            "--shard auto: neither {K8S_INDEX} (a Kubernetes Indexed Job) nor {SLURM_ID} (a Slurm job array) is set; outside those, pass --shard I/N"
        )),
    }
}

fn kubernetes(index: u32, shards: Option<u32>) -> Result<Shard, String> {
    let count = shards.ok_or_else(|| {
        format!(
            "--shard auto: {K8S_INDEX}={index} says which shard this pod is, but not how many there are; pass --shards N (the Job's completions)"
        )
    })?;
    if count == 0 || index >= count {
        return Err(format!(
            "--shard auto: {K8S_INDEX}={index} is not below --shards {count}; the Job's completions and --shards must agree"
        ));
    }
    Ok(Shard { index, count })
}

fn slurm_array(id: u32, env: &impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
    let min = number(env, SLURM_MIN)?
        .ok_or_else(|| format!("--shard auto: {SLURM_ID} is set but {SLURM_MIN} is not"))?;
    let count = number(env, SLURM_COUNT)?
        .ok_or_else(|| format!("--shard auto: {SLURM_ID} is set but {SLURM_COUNT} is not"))?;
    let step = number(env, SLURM_STEP)?.unwrap_or(1).max(1);
    let offset = id
        .checked_sub(min)
        .ok_or_else(|| format!("--shard auto: {SLURM_ID}={id} is below {SLURM_MIN}={min}"))?;
    if offset % step != 0 {
        return Err(format!(
            "--shard auto: {SLURM_ID}={id} is not on the array's step {step} from {min}"
        ));
    }
    let index = offset / step;
    if count == 0 || index >= count {
        return Err(format!(
            "--shard auto: {SLURM_ID}={id} is task {index} of an array of {SLURM_COUNT}={count} starting at {min}; use a contiguous array such as --array={min}-{}",
            u64::from(min) + u64::from(count.max(1)) - 1
        ));
    }
    Ok(Shard { index, count })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn shard(index: u32, count: u32) -> Shard {
        Shard { index, count }
    }

    #[test]
    fn shards_partition_the_seeds() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for n in 0..300 {
            let id = format!("seed-{n}");
            assert_eq!(shards.iter().filter(|s| s.contains(&id)).count(), 1);
        }
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(shard(2, 5).to_string(), "2/5");
    }

    #[test]
    fn auto_reads_kubernetes_and_slurm() {
        let auto = ShardSpec::Auto;
        assert_eq!("auto".parse::<ShardSpec>(), Ok(auto));
        let k8s = env(&[(K8S_INDEX, "2")]);
        assert_eq!(auto.resolve(Some(3), &k8s), Ok(shard(2, 3)));
        let slurm = env(&[(SLURM_ID, "3"), (SLURM_MIN, "1"), (SLURM_COUNT, "3")]);
        assert_eq!(auto.resolve(None, &slurm), Ok(shard(2, 3)));
        assert_eq!(auto.resolve(Some(3), &slurm), Ok(shard(2, 3)));
        let stepped = env(&[
            (SLURM_ID, "14"),
            (SLURM_MIN, "10"),
            (SLURM_COUNT, "3"),
            (SLURM_STEP, "2"),
        ]);
        assert_eq!(auto.resolve(None, &stepped), Ok(shard(2, 3)));
        let fixed: ShardSpec = "1/4".parse().unwrap();
        assert_eq!(fixed.resolve(None, env(&[])), Ok(shard(1, 4)));
        assert_eq!(resolve(None, None, env(&[])), Ok(None));
    }

    #[test]
    fn auto_explains_what_is_wrong() {
        let auto = ShardSpec::Auto;
        let cases: Vec<(Result<Shard, String>, &str)> = vec![
            (
                auto.resolve(Some(3), env(&[])),
                "neither JOB_COMPLETION_INDEX",
            ),
            (
                auto.resolve(None, env(&[(K8S_INDEX, "0")])),
                "pass --shards N",
            ),
            (
                auto.resolve(Some(3), env(&[(K8S_INDEX, "3")])),
                "JOB_COMPLETION_INDEX=3 is not below --shards 3",
            ),
            (
                auto.resolve(Some(3), env(&[(K8S_INDEX, "x")])),
                "JOB_COMPLETION_INDEX=\"x\" is not",
            ),
            (
                auto.resolve(
                    None,
                    env(&[(SLURM_ID, "4"), (SLURM_MIN, "1"), (SLURM_COUNT, "3")]),
                ),
                "task 3 of an array of SLURM_ARRAY_TASK_COUNT=3",
            ),
            (
                auto.resolve(
                    None,
                    env(&[(SLURM_ID, "0"), (SLURM_MIN, "1"), (SLURM_COUNT, "3")]),
                ),
                "is below SLURM_ARRAY_TASK_MIN=1",
            ),
            (
                auto.resolve(None, env(&[(SLURM_ID, "1"), (SLURM_COUNT, "3")])),
                "SLURM_ARRAY_TASK_MIN is not",
            ),
            (
                auto.resolve(
                    Some(4),
                    env(&[(SLURM_ID, "1"), (SLURM_MIN, "1"), (SLURM_COUNT, "3")]),
                ),
                "--shards 4 disagrees with shard 0/3",
            ),
            (
                auto.resolve(Some(2), env(&[(K8S_INDEX, "0"), (SLURM_ID, "0")])),
                "both",
            ),
        ];
        for (result, expected) in cases {
            let err = result.unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
        assert!(resolve(None, Some(3), env(&[])).is_err());
        assert!("2/2".parse::<ShardSpec>().unwrap_err().contains("auto"));
    }
}
