//! Pareto bookkeeping for GEPA parent selection: pure data and arithmetic, no I/O, no locks.
//!
//! This module owns two things:
//!
//! * [`ScoreTable`]: every candidate's mean reward on every *instance* it was scored on.
//!   Online there is no fixed validation set, so an instance is whatever key the caller
//!   files a reward under: the client's `reward_info.seed` when it sent one, and a key
//!   unique to that reward (e.g. the rollout id) when it did not, so that a reward without
//!   a seed is an instance of its own. A candidate's score on an instance is the mean of
//!   all its rewards there. Non-finite rewards (NaN, ±infinity) are ignored.
//! * [`pareto_front`] and [`sample_parent`]: GEPA's parent selection (Agrawal et al. 2025,
//!   reference implementation gepa-ai/gepa), adapted to sparse online scores.
//!
//! The statistical rules, in plain words:
//!
//! 1. **Winners of an instance.** For each instance, look only at the candidates under
//!    consideration that *have* a score on it. The best of those scores is the instance's
//!    best; every candidate whose score is within a tiny tolerance of it ([`TIE_EPSILON`],
//!    relative to the score's magnitude when that exceeds 1) wins the instance. A missing
//!    score is "not tried", never "scored zero". Consequently an instance scored by only
//!    one candidate counts as a win for that candidate: it is the best of those that tried
//!    it. This rewards candidates for coverage that others lack; it evens out as traffic
//!    spreads over the candidates and the same seeds come back.
//! 2. **The front.** The candidates winning at least one instance. A candidate is
//!    *dominated*, and dropped, when another candidate wins every instance it wins and at
//!    least one more (its win set is a strict subset of the other's). Two candidates with
//!    identical win sets are both kept: neither is better than the other on the evidence.
//!    Since "strict subset" is transitive, this leaves exactly the candidates whose win set
//!    is not strictly contained in anybody's.
//! 3. **Parent sampling.** A parent is drawn from the front with probability proportional
//!    to the number of instances it wins, so a candidate that is the best on many
//!    instances is mutated more often, while any non-dominated candidate keeps a chance.
//!
//! An empty front (nothing scored yet among the candidates considered) means there is no
//! evidence; the caller decides what to do (typically: mutate the baseline).

use std::collections::{BTreeMap, BTreeSet};

/// Tolerance under which two mean scores count as a tie for an instance's best.
/// Absolute for scores of magnitude up to 1, relative above.
pub const TIE_EPSILON: f64 = 1e-9;

/// Per-candidate, per-instance mean scores.
///
/// Stored instance-major (instance key -> candidate id -> (sum, count)) because every
/// question asked of the table ("who is best on this instance?", "how many candidates
/// scored it?") is asked per instance. Ordered maps keep every result deterministic.
#[derive(Debug, Clone, Default)]
pub struct ScoreTable {
    instances: BTreeMap<String, BTreeMap<String, (f64, u64)>>,
}

impl ScoreTable {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one reward of `candidate` on `instance`. Non-finite rewards are ignored.
    pub fn add(&mut self, candidate: &str, instance: &str, reward: f64) {
        if !reward.is_finite() {
            return;
        }
        let entry = self
            .instances
            .entry(instance.to_owned())
            .or_default()
            .entry(candidate.to_owned())
            .or_insert((0.0, 0));
        entry.0 += reward;
        entry.1 += 1;
    }

    /// Mean of `candidate`'s rewards on `instance`; `None` if it has none there.
    #[cfg(test)]
    pub fn mean(&self, candidate: &str, instance: &str) -> Option<f64> {
        self.instances
            .get(instance)
            .and_then(|scores| scores.get(candidate))
            .and_then(|&(sum, count)| mean_of(sum, count))
    }

    /// Number of distinct instances with at least one score from any candidate.
    #[cfg(test)]
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// Number of instances scored by at least two of the given candidates (a measure of
    /// how comparable they are). A candidate listed twice counts once.
    pub fn shared_instances(&self, candidates: &[&str]) -> usize {
        let wanted: BTreeSet<&str> = candidates.iter().copied().collect();
        self.instances
            .values()
            .filter(|scores| wanted.iter().filter(|c| scores.contains_key(**c)).count() >= 2)
            .count()
    }
}

fn mean_of(sum: f64, count: u64) -> Option<f64> {
    (count > 0).then(|| sum / count as f64)
}

/// One non-dominated candidate and the number of instances it wins.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontMember {
    pub candidate: String,
    pub wins: usize,
}

/// The Pareto front over `candidates` (only these are considered, e.g. the active ones),
/// dominated members removed, sorted by candidate id for determinism. A candidate listed
/// twice counts once; candidates without any win are not on the front.
pub fn pareto_front(table: &ScoreTable, candidates: &[&str]) -> Vec<FrontMember> {
    let considered: BTreeSet<&str> = candidates.iter().copied().collect();
    // Candidate -> indices of the instances it wins (instance indices follow the
    // table's key order, so every set is built in increasing order).
    let mut wins: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (index, scores) in table.instances.values().enumerate() {
        let means: Vec<(&str, f64)> = scores
            .iter()
            .filter(|(c, _)| considered.contains(c.as_str()))
            .filter_map(|(c, &(sum, count))| mean_of(sum, count).map(|m| (c.as_str(), m)))
            .collect();
        let Some(best) = means.iter().map(|&(_, m)| m).reduce(f64::max) else {
            continue;
        };
        let tolerance = TIE_EPSILON * best.abs().max(1.0);
        for &(candidate, mean) in &means {
            if mean >= best - tolerance {
                wins.entry(candidate).or_default().insert(index);
            }
        }
    }
    wins.iter()
        // A strictly smaller subset never includes the candidate itself.
        .filter(|(_, a_wins)| {
            !wins
                .values()
                .any(|b_wins| a_wins.len() < b_wins.len() && a_wins.is_subset(b_wins))
        })
        .map(|(candidate, won)| FrontMember {
            candidate: (*candidate).to_owned(),
            wins: won.len(),
        })
        .collect()
}

/// Samples a parent from the front with probability proportional to `wins`; `None` if the
/// front is empty. (A hand-built front whose wins are all zero is sampled uniformly.)
pub fn sample_parent<R: rand::Rng + ?Sized>(front: &[FrontMember], rng: &mut R) -> Option<String> {
    if front.is_empty() {
        return None;
    }
    let total: usize = front.iter().map(|m| m.wins).sum();
    if total == 0 {
        return front
            .get(rng.gen_range(0..front.len()))
            .map(|m| m.candidate.clone());
    }
    let mut ticket = rng.gen_range(0..total);
    for member in front {
        if ticket < member.wins {
            return Some(member.candidate.clone());
        }
        ticket -= member.wins;
    }
    // Unreachable: the tickets cover exactly `total`.
    front.last().map(|m| m.candidate.clone())
}

/// True when `a` and `b` are both on the front (non-dominated). Callers wanting two
/// distinct parents must pass distinct ids (`a == b` answers whether `a` is on the front).
/// The merge pairing in `optimizer` reads the front itself; this states the property for
/// the tests.
#[cfg(test)]
pub fn both_on_front(front: &[FrontMember], a: &str, b: &str) -> bool {
    let on = |id: &str| front.iter().any(|m| m.candidate == id);
    on(a) && on(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn table(rows: &[(&str, &str, f64)]) -> ScoreTable {
        let mut t = ScoreTable::new();
        for &(c, i, r) in rows {
            t.add(c, i, r);
        }
        t
    }

    fn member(candidate: &str, wins: usize) -> FrontMember {
        FrontMember {
            candidate: candidate.to_owned(),
            wins,
        }
    }

    #[test]
    fn score_table_means_counts_and_sharing() {
        let mut t = table(&[
            ("a", "s1", 1.0),
            ("a", "s1", 0.0),
            ("a", "s2", 0.5),
            ("b", "s2", 0.25),
            ("c", "s3", 1.0),
        ]);
        assert_eq!(t.mean("a", "s1"), Some(0.5));
        assert_eq!(t.mean("b", "s2"), Some(0.25));
        assert_eq!(t.mean("b", "s1"), None);
        assert_eq!(t.mean("zzz", "s1"), None);
        assert_eq!(t.mean("a", "nope"), None);
        assert_eq!(t.instance_count(), 3);
        assert_eq!(t.shared_instances(&["a", "b", "c"]), 1);
        assert_eq!(t.shared_instances(&["a", "c"]), 0);
        assert_eq!(
            t.shared_instances(&["a", "a"]),
            0,
            "a duplicate is one candidate"
        );
        assert_eq!(t.shared_instances(&[]), 0);
        t.add("a", "s4", f64::NAN);
        t.add("a", "s4", f64::INFINITY);
        assert_eq!(t.instance_count(), 3, "non-finite rewards are ignored");
        assert_eq!(t.mean("a", "s4"), None);
    }

    #[test]
    fn single_best_candidate_wins_everything() {
        let t = table(&[
            ("a", "s1", 0.9),
            ("b", "s1", 0.2),
            ("a", "s2", 0.8),
            ("b", "s2", 0.1),
            ("c", "s2", 0.3),
        ]);
        assert_eq!(pareto_front(&t, &["a", "b", "c"]), vec![member("a", 2)]);
    }

    #[test]
    fn two_candidates_best_on_different_instances_both_on_front() {
        let t = table(&[
            ("a", "s1", 1.0),
            ("b", "s1", 0.0),
            ("a", "s2", 1.0),
            ("b", "s2", 0.5),
            ("a", "s3", 0.0),
            ("b", "s3", 1.0),
        ]);
        let front = pareto_front(&t, &["b", "a"]);
        assert_eq!(front, vec![member("a", 2), member("b", 1)]);
        assert!(both_on_front(&front, "a", "b"));
    }

    #[test]
    fn dominated_candidate_removed() {
        // a wins s1 (tie with b); b wins s1 and s2; c wins s3: a ⊂ b, so a goes.
        let t = table(&[
            ("a", "s1", 1.0),
            ("b", "s1", 1.0),
            ("a", "s2", 0.2),
            ("b", "s2", 0.9),
            ("a", "s3", 0.1),
            ("b", "s3", 0.1),
            ("c", "s3", 0.7),
        ]);
        let front = pareto_front(&t, &["a", "b", "c"]);
        assert_eq!(front, vec![member("b", 2), member("c", 1)]);
        assert!(!both_on_front(&front, "a", "b"));
        assert!(both_on_front(&front, "b", "c"));
    }

    #[test]
    fn identical_win_sets_both_kept() {
        let t = table(&[
            ("a", "s1", 0.8),
            ("b", "s1", 0.8),
            ("a", "s2", 0.6),
            ("b", "s2", 0.6),
            ("c", "s2", 0.1),
        ]);
        assert_eq!(
            pareto_front(&t, &["a", "b", "c"]),
            vec![member("a", 2), member("b", 2)]
        );
    }

    #[test]
    fn ties_within_epsilon_count_for_all() {
        // 0.1 and 0.2 average to 0.15000000000000002, a tie with 0.15.
        let t = table(&[
            ("a", "s1", 0.1),
            ("a", "s1", 0.2),
            ("b", "s1", 0.15),
            ("c", "s1", 0.15 - 1e-6),
            ("a", "s2", 1e6),
            ("b", "s2", 1e6 + 1e-4),
        ]);
        assert_ne!(t.mean("a", "s1"), t.mean("b", "s1"));
        // s2: equal up to the relative tolerance (1e-4 / 1e6 = 1e-10).
        assert_eq!(
            pareto_front(&t, &["a", "b", "c"]),
            vec![member("a", 2), member("b", 2)]
        );
    }

    #[test]
    fn instance_scored_by_only_one_candidate_counts_for_it() {
        // b never tried s2 or s3; a is best of those that tried them.
        let t = table(&[
            ("a", "s1", 0.1),
            ("b", "s1", 0.9),
            ("a", "s2", 0.0),
            ("a", "s3", 0.0),
            ("b", "s4", 0.0),
        ]);
        assert_eq!(
            pareto_front(&t, &["a", "b"]),
            vec![member("a", 2), member("b", 2)]
        );
    }

    #[test]
    fn only_listed_candidates_considered() {
        let t = table(&[
            ("a", "s1", 0.5),
            ("b", "s1", 0.4),
            ("x", "s1", 1.0),
            ("a", "s2", 0.1),
            ("x", "s2", 1.0),
        ]);
        assert_eq!(pareto_front(&t, &["a", "b"]), vec![member("a", 2)]);
        assert_eq!(pareto_front(&t, &["b"]), vec![member("b", 1)]);
        assert_eq!(pareto_front(&t, &["a", "b", "x"]), vec![member("x", 2)]);
        assert_eq!(pareto_front(&t, &["a", "a"]), vec![member("a", 2)]);
    }

    #[test]
    fn sample_parent_frequencies_follow_wins() {
        let front = vec![member("a", 3), member("b", 1)];
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let draws = 10_000;
        let a = (0..draws)
            .filter(|_| sample_parent(&front, &mut rng).as_deref() == Some("a"))
            .count();
        let share = a as f64 / draws as f64;
        assert!((share - 0.75).abs() < 0.03, "share of a = {share}");
    }

    #[test]
    fn sample_parent_edge_cases() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(sample_parent(&[], &mut rng), None);
        let one = vec![member("only", 5)];
        for _ in 0..20 {
            assert_eq!(sample_parent(&one, &mut rng).as_deref(), Some("only"));
        }
        let zero = vec![member("a", 0), member("b", 0)];
        assert!(sample_parent(&zero, &mut rng).is_some());
        let skip = vec![member("a", 0), member("b", 2)];
        for _ in 0..20 {
            assert_eq!(sample_parent(&skip, &mut rng).as_deref(), Some("b"));
        }
    }

    #[test]
    fn empty_inputs() {
        let empty = ScoreTable::new();
        assert_eq!(empty.instance_count(), 0);
        assert!(pareto_front(&empty, &["a", "b"]).is_empty());
        let t = table(&[("a", "s1", 1.0)]);
        assert!(pareto_front(&t, &[]).is_empty());
        assert!(pareto_front(&t, &["unknown"]).is_empty());
        assert!(!both_on_front(&[], "a", "b"));
        let front = pareto_front(&t, &["a"]);
        assert!(both_on_front(&front, "a", "a"));
        assert!(!both_on_front(&front, "a", "b"));
    }
}
