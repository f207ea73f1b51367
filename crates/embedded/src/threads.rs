//! How many CPU threads each engine call runs on, chosen by measurement while the engine runs.
//!
//! ggml's CPU threads meet at spinning barriers several hundred times per forward pass. On
//! idle cores two threads decode about 1.4× faster than one; when another process wants the
//! same cores, a thread that loses its core leaves the others spinning and the same call runs
//! ten times slower than on one thread. No fixed count is right for both, so the
//! [`Governor`] keeps, per kind of call, a running cost (seconds per token) for each thread
//! count it may use, runs each call on the cheapest, and now and then probes another count —
//! less often each time a probe loses, so a machine that stays busy pays for few slow probes.
//!
//! Thread counts never change results: ggml splits matrix rows and tensor rows between
//! threads, and each row is computed whole by one thread (the determinism tests check this).
//! Not for anything but the choice: applying it is [`crate::backend::Backend::set_threads`].

use std::time::Duration;

/// What a call does, for keeping costs apart: a prefill chunk, or a decode step of about
/// `2^bucket` rows (per-token cost differs between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Prefill,
    Decode { rows: usize },
}

impl Call {
    /// Index into the governor's tables: 0 for prefill, 1 + ⌈log2 rows⌉ (at most 6) for decode.
    fn class(self) -> usize {
        match self {
            Call::Prefill => 0,
            Call::Decode { rows } => {
                1 + (usize::BITS - rows.max(1).saturating_sub(1).leading_zeros()).min(5) as usize
            }
        }
    }
}

const CLASSES: usize = 7;
/// Weight of the newest sample in a running cost.
const SMOOTHING: f64 = 0.3;
/// A probe must beat the current choice by this factor to take over (noise margin).
const MARGIN: f64 = 0.9;
/// Calls between probes after a probe wins, and the most they grow to after losses.
const FIRST_PROBE_GAP: u32 = 16;
const MAX_PROBE_GAP: u32 = 512;

#[derive(Debug, Clone, Copy, Default)]
struct Arm {
    /// Running seconds per token; `None` until measured.
    cost: Option<f64>,
}

#[derive(Debug, Clone)]
struct Class {
    arms: Vec<Arm>,
    /// The arm in use (index into `Governor::choices`).
    current: usize,
    /// Calls left until the next probe, and the gap after it.
    until_probe: u32,
    gap: u32,
    /// Which arm the next probe tries (round robin over the others).
    next_probe: usize,
    /// The arm being probed by the call in flight.
    probing: Option<usize>,
}

/// Chooses a thread count per call; see the module docs.
#[derive(Debug, Clone)]
pub struct Governor {
    /// The thread counts it may use, ascending.
    choices: Vec<usize>,
    classes: Vec<Class>,
    /// The class and arm of the call in flight.
    pending: Option<(usize, usize)>,
}

impl Governor {
    /// Adapts between 1 thread and `max` (1, 2, 4, … and `max` itself).
    pub fn adaptive(max: usize) -> Self {
        let max = max.max(1);
        let mut choices: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
            .take_while(|&n| n < max)
            .collect();
        choices.push(max);
        Self::over(choices)
    }

    /// Always `threads`.
    pub fn fixed(threads: usize) -> Self {
        Self::over(vec![threads.max(1)])
    }

    fn over(choices: Vec<usize>) -> Self {
        let class = Class {
            arms: vec![Arm::default(); choices.len()],
            current: 0,
            until_probe: FIRST_PROBE_GAP,
            gap: FIRST_PROBE_GAP,
            next_probe: 0,
            probing: None,
        };
        Self {
            classes: vec![class; CLASSES],
            choices,
            pending: None,
        }
    }

    /// The thread counts this governor chooses from.
    pub fn choices(&self) -> &[usize] {
        &self.choices
    }

    /// The thread count for the next call of kind `call`; report its duration with
    /// [`Governor::record`].
    pub fn pick(&mut self, call: Call) -> usize {
        let c = call.class();
        let class = &mut self.classes[c];
        let arm = if let Some(unmeasured) = class.arms.iter().position(|a| a.cost.is_none()) {
            // Measure every arm once first, cheapest thread count first.
            class.probing = (unmeasured != class.current).then_some(unmeasured);
            unmeasured
        } else if class.arms.len() > 1 && class.until_probe == 0 {
            // Round robin over the arms other than the current one.
            let n = class.arms.len();
            let arm = (class.current + 1 + class.next_probe % (n - 1)) % n;
            class.next_probe = class.next_probe.wrapping_add(1);
            class.probing = Some(arm);
            arm
        } else {
            class.until_probe = class.until_probe.saturating_sub(1);
            class.probing = None;
            class.current
        };
        self.pending = Some((c, arm));
        self.choices[arm]
    }

    /// Records how long the call [`Governor::pick`] last chose for took, over `tokens` tokens.
    pub fn record(&mut self, elapsed: Duration, tokens: usize) {
        let Some((c, arm)) = self.pending.take() else {
            return;
        };
        let sample = elapsed.as_secs_f64() / tokens.max(1) as f64;
        let class = &mut self.classes[c];
        if class.probing.take() == Some(arm) {
            // A probe is a fresh look at an arm: it replaces the arm's figure, which may date
            // from before the load changed.
            let seen_before = class.arms[arm].cost.replace(sample).is_some();
            let incumbent = class.arms[class.current].cost.unwrap_or(f64::INFINITY);
            if sample < incumbent * MARGIN {
                class.current = arm;
                class.gap = FIRST_PROBE_GAP;
            } else if seen_before {
                class.gap = (class.gap * 2).min(MAX_PROBE_GAP);
            }
            class.until_probe = class.gap;
            return;
        }
        let cost = &mut class.arms[arm].cost;
        let current = match *cost {
            None => sample,
            Some(old) => old + SMOOTHING * (sample - old),
        };
        *cost = Some(current);
        // If the arm in use got dearer than another arm's last figure, that one takes over
        // (its figure may be stale; running it refreshes it).
        if let Some((best, _)) = class
            .arms
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.cost.map(|cost| (i, cost)))
            .filter(|&(i, cost)| i != arm && cost < current * MARGIN)
            .min_by(|a, b| a.1.total_cmp(&b.1))
        {
            class.current = best;
        }
    }

    /// The thread count the last call of kind `call` would run on now (for reports).
    pub fn current(&self, call: Call) -> usize {
        self.choices[self.classes[call.class()].current]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `calls` decode calls of 16 rows, each taking `cost(threads)` seconds per token;
    /// returns how many ran on each thread count.
    fn simulate(
        governor: &mut Governor,
        calls: usize,
        cost: impl Fn(usize) -> f64,
    ) -> std::collections::BTreeMap<usize, usize> {
        let mut used = std::collections::BTreeMap::new();
        for _ in 0..calls {
            let threads = governor.pick(Call::Decode { rows: 16 });
            *used.entry(threads).or_default() += 1;
            governor.record(Duration::from_secs_f64(cost(threads) * 16.0), 16);
        }
        used
    }

    #[test]
    fn classes_separate_prefill_and_decode_sizes() {
        assert_eq!(Call::Prefill.class(), 0);
        assert_eq!(Call::Decode { rows: 1 }.class(), 1);
        assert_eq!(Call::Decode { rows: 2 }.class(), 2);
        assert_eq!(Call::Decode { rows: 3 }.class(), 3);
        assert_eq!(Call::Decode { rows: 4 }.class(), 3);
        assert_eq!(Call::Decode { rows: 16 }.class(), 5);
        assert_eq!(Call::Decode { rows: 17 }.class(), 6);
        assert_eq!(Call::Decode { rows: 1000 }.class(), 6);
    }

    #[test]
    fn choices_are_powers_of_two_up_to_the_cores() {
        assert_eq!(Governor::adaptive(1).choices(), &[1]);
        assert_eq!(Governor::adaptive(2).choices(), &[1, 2]);
        assert_eq!(Governor::adaptive(6).choices(), &[1, 2, 4, 6]);
        assert_eq!(Governor::adaptive(8).choices(), &[1, 2, 4, 8]);
        assert_eq!(Governor::fixed(3).choices(), &[3]);
    }

    /// Seconds per token on idle cores: two threads are faster.
    fn idle(threads: usize) -> f64 {
        if threads == 2 { 0.007 } else { 0.010 }
    }

    /// With another process on one of the two cores: two spinning threads collapse.
    fn busy(threads: usize) -> f64 {
        if threads == 2 { 0.100 } else { 0.018 }
    }

    #[test]
    fn settles_on_the_faster_count_on_idle_cores() {
        let mut g = Governor::adaptive(2);
        let used = simulate(&mut g, 500, idle);
        assert_eq!(g.current(Call::Decode { rows: 16 }), 2);
        assert!(used[&2] > 450, "{used:?}");
    }

    #[test]
    fn drops_to_one_thread_when_the_cores_get_busy_and_probes_rarely_after() {
        let mut g = Governor::adaptive(2);
        simulate(&mut g, 200, idle);
        let used = simulate(&mut g, 2000, busy);
        assert_eq!(g.current(Call::Decode { rows: 16 }), 1);
        // One slow call switches back, then probes back off: a handful over 2000 calls.
        assert!(used.get(&2).copied().unwrap_or(0) <= 12, "{used:?}");
        // The load goes away: a later probe finds two threads faster again.
        let used = simulate(&mut g, 1500, idle);
        assert_eq!(g.current(Call::Decode { rows: 16 }), 2);
        assert!(used[&2] > 900, "{used:?}");
    }

    #[test]
    fn a_fixed_governor_never_changes() {
        let mut g = Governor::fixed(2);
        let used = simulate(&mut g, 100, |_| 0.01);
        assert_eq!(used.len(), 1);
        assert_eq!(used[&2], 100);
    }

    #[test]
    fn record_without_pick_is_ignored() {
        let mut g = Governor::adaptive(2);
        g.record(Duration::from_millis(5), 1);
        assert_eq!(g.pick(Call::Prefill), 1);
    }
}
