//! Candidate selection: the one component that decides which candidate serves a call.
//!
//! The session decides *which* candidates may serve (its status and the candidates'
//! archiving); this module decides *among* them. Today every servable candidate gets an
//! equal share of traffic: with only the baseline that is the baseline. The optimizer
//! (reflective proposals, bandit allocation) replaces the policy here, and only here.

use rand::Rng;
use std::sync::Arc;

use crate::sessions::Candidate;

/// Chooses one candidate for one call. Cheap and lock-free: O(1) per call.
#[derive(Debug, Default, Clone)]
pub struct CandidateSelector;

impl CandidateSelector {
    /// Picks among `servable`, which the caller guarantees is non-empty.
    /// Returns `None` only if it is empty (a bug upstream of this function).
    pub fn choose<'a, R: Rng + ?Sized>(
        &self,
        servable: &'a [Arc<Candidate>],
        rng: &mut R,
    ) -> Option<&'a Arc<Candidate>> {
        match servable.len() {
            0 => None,
            1 => servable.first(),
            n => servable.get(rng.gen_range(0..n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn single_candidate_always_chosen_and_empty_is_none() {
        let c = Arc::new(Candidate::baseline("be brief".into()));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let sel = CandidateSelector;
        for _ in 0..10 {
            assert_eq!(
                sel.choose(std::slice::from_ref(&c), &mut rng).unwrap().id,
                "baseline"
            );
        }
        assert!(sel.choose(&[], &mut rng).is_none());
    }

    #[test]
    fn spreads_over_several_candidates() {
        let cs: Vec<Arc<Candidate>> = (0..4)
            .map(|i| Arc::new(Candidate::new(format!("cand_{i}"), "x".into(), vec![])))
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut hits = [0u32; 4];
        for _ in 0..4000 {
            let c = CandidateSelector.choose(&cs, &mut rng).unwrap();
            let i: usize = c.id[5..].parse().unwrap();
            hits[i] += 1;
        }
        assert!(hits.iter().all(|&h| h > 800), "{hits:?}");
    }
}
