//! Candidate selection: the one component that decides which candidate serves a call.
//!
//! The session decides *which* candidates may serve (its status and the candidates'
//! archiving); this module decides *among* them, with the policy of
//! [`super::allocation`]: a new candidate is served first until it has had
//! `gepa.warmup_rollouts` rollouts, then Thompson sampling on the posterior of each
//! candidate's mean reward sends most traffic to the apparent best while every active
//! candidate keeps some exploration. O(candidates) per call, no allocation.

use rand::Rng;
use std::sync::Arc;

use super::allocation::{AllocationPolicy, ArmStats};
use super::candidate::Candidate;
use crate::config::Allocation;

/// Chooses one candidate for one call.
#[derive(Debug, Clone, Copy)]
pub struct CandidateSelector {
    pub policy: AllocationPolicy,
    /// `Uniform` ignores rewards: the baseline the simulator compares against.
    pub allocation: Allocation,
    /// `gepa.explore_share`: the most of a session's calls a warming-up candidate gets
    /// (1: all of them until it is warm, as before the bound existed).
    pub explore_share: f64,
}

impl CandidateSelector {
    pub fn new(warmup_rollouts: u32) -> Self {
        CandidateSelector::with_allocation(warmup_rollouts, Allocation::Thompson)
    }

    pub fn with_allocation(warmup_rollouts: u32, allocation: Allocation) -> Self {
        CandidateSelector {
            policy: AllocationPolicy {
                min_rollouts: u64::from(warmup_rollouts),
            },
            allocation,
            explore_share: 1.0,
        }
    }


    /// Picks among `servable`, a warming-up candidate with at most `explore_share` of the
    /// calls; `None` only if `servable` is empty.
    pub fn choose<'a, R: Rng + ?Sized>(
        &self,
        servable: &'a [Arc<Candidate>],
        rng: &mut R,
    ) -> Option<&'a Arc<Candidate>> {
        let explore = self.explore_share;
        if servable.len() == 1 {
            return servable.first();
        }
        if self.allocation == Allocation::Uniform {
            return match servable.len() {
                0 => None,
                n => servable.get(rng.gen_range(0..n)),
            };
        }
        // Small pools are the norm (online_proposer_max_candidates); stay on the stack.
        let mut stats = [ArmStats {
            issued: 0,
            rewards: 0,
            reward_sum: 0.0,
            reward_sum_sq: 0.0,
        }; 32];
        if servable.len() <= stats.len() {
            for (slot, c) in stats.iter_mut().zip(servable) {
                *slot = c.stats();
            }
            let i = self
                .policy
                .choose_exploring(&stats[..servable.len()], explore, rng)?;
            return servable.get(i);
        }
        let arms: Vec<ArmStats> = servable.iter().map(|c| c.stats()).collect();
        servable.get(self.policy.choose_exploring(&arms, explore, rng)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Candidates `c0`, `c1`, … with instructions `i0`, `i1`, …
    fn numbered_candidates(n: usize) -> Vec<Arc<Candidate>> {
        (0..n)
            .map(|i| {
                Arc::new(Candidate::new(
                    format!("c{i}").into(),
                    format!("i{i}").into(),
                    vec![],
                ))
            })
            .collect()
    }

    #[test]
    fn single_candidate_always_chosen_and_empty_is_none() {
        let c = Arc::new(Candidate::baseline("be brief".into()));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let sel = CandidateSelector::new(5);
        for _ in 0..10 {
            assert_eq!(
                &*sel.choose(std::slice::from_ref(&c), &mut rng).unwrap().id,
                "baseline"
            );
        }
        assert!(sel.choose(&[], &mut rng).is_none());
    }

    #[test]
    fn uniform_allocation_splits_evenly() {
        let cs = numbered_candidates(2);
        cs[0].record_issued_for_test(1.0);
        let sel = CandidateSelector::with_allocation(5, Allocation::Uniform);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let firsts = (0..2000)
            .filter(|_| sel.choose(&cs, &mut rng).unwrap().id == "c0".into())
            .count();
        assert!((900..1100).contains(&firsts), "{firsts}");
    }

    #[test]
    fn new_candidates_warm_up_first() {
        let old = Arc::new(Candidate::new("old".into(), "x".into(), vec![]));
        for _ in 0..50 {
            old.record_issued_for_test(0.9);
        }
        let new = Arc::new(Candidate::new("new".into(), "y".into(), vec![]));
        let cs = vec![old, new.clone()];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let sel = CandidateSelector::new(5);
        for _ in 0..5 {
            let c = sel.choose(&cs, &mut rng).unwrap();
            assert_eq!(&*c.id, "new");
            c.record_issued_for_test(0.0);
        }
    }

    #[test]
    fn converges_to_the_best_of_three_fixed_candidates() {
        let rates = [0.2, 0.5, 0.8];
        let cs = numbered_candidates(3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let sel = CandidateSelector::new(5);
        let mut last = [0u32; 3];
        for round in 0..2000 {
            let c = sel.choose(&cs, &mut rng).unwrap();
            let i: usize = c.id[1..].parse().unwrap();
            let reward = if rng.gen::<f64>() < rates[i] {
                1.0
            } else {
                0.0
            };
            c.record_issued_for_test(reward);
            if round >= 1500 {
                last[i] += 1;
            }
        }
        assert!(
            last[2] > 400,
            "best candidate share of the last 500: {last:?}"
        );
    }
}
