//! Traffic allocation among a session's active candidates: pure arithmetic over per-arm
//! counters, no I/O, no locks. O(candidates) per call and no heap allocation.
//!
//! This module owns the rule deciding which active candidate ("arm") serves the next
//! rollout, given each arm's counters ([`ArmStats`]). The rules, in plain words:
//!
//! 1. **Warm-up.** An arm that has been *issued* fewer than `min_rollouts` rollouts is
//!    served first, before anything else. Issued, not rewarded: rewards arrive later than
//!    traffic, so counting rewards would keep pouring traffic onto a new candidate until
//!    its first rewards came back. When several arms are warming up, the one with the
//!    fewest issued rollouts goes first (ties: the lowest index), so they fill up evenly.
//! 2. **Thompson sampling.** Once every arm is warm, each arm draws a plausible value of
//!    its true mean reward from a Gaussian posterior, `Normal(mean, sd / sqrt(n))`, and
//!    the highest draw is served (ties: the lowest index). `mean` is the arm's mean reward
//!    and `n` its number of rewards. Arms that are clearly worse rarely win a draw, but
//!    every arm keeps some chance, so exploration never stops entirely.
//! 3. **Variance prior.** `sd` is the sample standard deviation shrunk toward 0.25 (a
//!    sensible spread for rewards on a 0..1 scale): `sd² = (Σ(x - mean)² + 2 · 0.25²) /
//!    (n - 1 + 2)`, i.e. a scaled-inverse-χ² prior worth two pseudo-observations of
//!    variance 0.25². With one reward `sd` is exactly 0.25; as rewards accumulate it
//!    tends to the sample standard deviation. Without it, an arm whose first few binary
//!    rewards happened to be identical would have a zero-width posterior and would either
//!    never be explored again or hog all traffic.
//! 4. **Issued but not yet rewarded.** A warm arm with no reward yet draws from a wide
//!    prior, `Normal(session mean, 1.0)`, where the session mean is the mean of all rewards
//!    of all arms (0 when there are none). It therefore keeps being served now and then
//!    until its rewards arrive.
//!
//! [`confidence_bounds`] is the `mean ± z · s / sqrt(n)` interval with `s` carrying the
//! same variance prior as rule 3 (so a perfect streak never gets a zero-width interval),
//! for decisions such as pruning clearly worse candidates and naming the best.

/// One arm's counters. `reward_sum_sq` is the sum of squared rewards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmStats {
    pub issued: u64,
    pub rewards: u64,
    pub reward_sum: f64,
    pub reward_sum_sq: f64,
}

/// The allocation policy's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllocationPolicy {
    /// Rollouts issued to a new arm before it competes on rewards.
    pub min_rollouts: u64,
}

/// Prior standard deviation of a single reward (rule 3).
const PRIOR_SD: f64 = 0.25;
/// Weight of the variance prior, in pseudo-observations (rule 3).
const PRIOR_WEIGHT: f64 = 2.0;
/// Standard deviation of the draw for a warm arm without rewards (rule 4).
const UNREWARDED_SD: f64 = 1.0;

impl AllocationPolicy {
    /// Returns the index into `arms` to serve, warm-up first (rule 1 with no bound on its
    /// share). `arms` non-empty, else None. Deterministic for a given RNG state. Consumes
    /// no randomness during warm-up or with a single arm.
    pub fn choose<R: rand::Rng + ?Sized>(&self, arms: &[ArmStats], rng: &mut R) -> Option<usize> {
        self.choose_exploring(arms, 1.0, rng)
    }

    /// As [`AllocationPolicy::choose`], but a warming-up arm gets at most the share
    /// `explore` (0 to 1) of the calls: with probability `explore` the warm-up goes first,
    /// else Thompson sampling among the warm arms. With no warm arm, warm-up goes first
    /// whatever `explore`.
    pub fn choose_exploring<R: rand::Rng + ?Sized>(
        &self,
        arms: &[ArmStats],
        explore: f64,
        rng: &mut R,
    ) -> Option<usize> {
        if arms.len() <= 1 {
            return (!arms.is_empty()).then_some(0);
        }
        // Pass 1: warm-up candidates and the session-wide reward mean.
        let mut warming: Option<(usize, u64)> = None;
        let (mut sum, mut count) = (0.0, 0u64);
        for (i, arm) in arms.iter().enumerate() {
            if arm.issued < self.min_rollouts && warming.is_none_or(|(_, w)| arm.issued < w) {
                warming = Some((i, arm.issued));
            }
            sum += arm.reward_sum;
            count += arm.rewards;
        }
        let all_warming = arms.iter().all(|a| a.issued < self.min_rollouts);
        if let Some((i, _)) = warming {
            if all_warming || explore >= 1.0 || rng.gen::<f64>() < explore {
                return Some(i);
            }
        }
        let session_mean = if count > 0 && sum.is_finite() {
            sum / count as f64
        } else {
            0.0
        };
        // Pass 2: one posterior draw per warm arm, highest wins.
        let mut best: Option<(usize, f64)> = None;
        for (i, arm) in arms.iter().enumerate() {
            if arm.issued < self.min_rollouts {
                continue;
            }
            let (mean, sd) = posterior(arm).unwrap_or((session_mean, UNREWARDED_SD));
            let draw = mean + sd * standard_normal(rng);
            let draw = if draw.is_nan() {
                f64::NEG_INFINITY
            } else {
                draw
            };
            if best.is_none_or(|(_, b)| draw > b) {
                best = Some((i, draw));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Posterior mean and standard deviation of an arm's mean reward (rules 2 and 3);
/// `None` without rewards.
fn posterior(stats: &ArmStats) -> Option<(f64, f64)> {
    let (mean, ssd) = mean_and_ssd(stats)?;
    let n = stats.rewards as f64;
    let var = (ssd + PRIOR_WEIGHT * PRIOR_SD * PRIOR_SD) / (n - 1.0 + PRIOR_WEIGHT);
    Some((mean, (var / n).sqrt()))
}

/// Mean and sum of squared deviations from it; `None` without rewards.
fn mean_and_ssd(stats: &ArmStats) -> Option<(f64, f64)> {
    if stats.rewards == 0 {
        return None;
    }
    let n = stats.rewards as f64;
    let mean = stats.reward_sum / n;
    // Clamped: rounding can make it slightly negative when all rewards are equal.
    let ssd = (stats.reward_sum_sq - stats.reward_sum * mean).max(0.0);
    Some((mean, ssd))
}

/// Standard normal sample (Box–Muller), exposed for tests/other modules.
pub fn standard_normal<R: rand::Rng + ?Sized>(rng: &mut R) -> f64 {
    // gen::<f64>() is in [0, 1); 1 - u is in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.gen::<f64>();
    let u2 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Lower and upper confidence bounds of the mean (mean ± z * sd/sqrt(n)), None with fewer
/// than 2 rewards. `sd` carries the same variance prior as the Thompson posterior, so a
/// perfect streak (every reward equal) does not get a zero-width interval: 20 rewards of
/// 1.0 must not make every candidate below 1.0 look confidently worse.
pub fn confidence_bounds(stats: &ArmStats, z: f64) -> Option<(f64, f64)> {
    if stats.rewards < 2 {
        return None;
    }
    let (mean, ssd) = mean_and_ssd(stats)?;
    let n = stats.rewards as f64;
    let var = (ssd + PRIOR_WEIGHT * PRIOR_SD * PRIOR_SD) / (n - 1.0 + PRIOR_WEIGHT);
    let half = z * var.sqrt() / n.sqrt();
    Some((mean - half, mean + half))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn arm(issued: u64, rewards: &[f64]) -> ArmStats {
        ArmStats {
            issued,
            rewards: rewards.len() as u64,
            reward_sum: rewards.iter().sum(),
            reward_sum_sq: rewards.iter().map(|r| r * r).sum(),
        }
    }

    fn record(stats: &mut ArmStats, reward: f64) {
        stats.rewards += 1;
        stats.reward_sum += reward;
        stats.reward_sum_sq += reward * reward;
    }

    /// Serves `rounds` calls to a Bernoulli bandit: each call goes to the arm `policy`
    /// chooses, which earns 1 with probability `rates[arm]`, else 0. `on_call(round, arm)`
    /// sees each choice.
    fn play(
        policy: &AllocationPolicy,
        arms: &mut [ArmStats],
        rates: &[f64],
        rng: &mut StdRng,
        rounds: usize,
        mut on_call: impl FnMut(usize, usize),
    ) {
        for round in 0..rounds {
            let Some(i) = policy.choose(arms, rng) else {
                panic!("no arm chosen");
            };
            arms[i].issued += 1;
            let reward = if rng.gen::<f64>() < rates[i] {
                1.0
            } else {
                0.0
            };
            record(&mut arms[i], reward);
            on_call(round, i);
        }
    }

    #[test]
    fn empty_is_none_and_one_arm_is_zero() {
        let policy = AllocationPolicy { min_rollouts: 5 };
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(policy.choose(&[], &mut rng), None);
        for issued in [0, 4, 5, 100] {
            assert_eq!(policy.choose(&[arm(issued, &[0.3])], &mut rng), Some(0));
        }
    }

    #[test]
    fn warm_up_serves_fewest_issued_first() {
        let policy = AllocationPolicy { min_rollouts: 5 };
        let mut rng = StdRng::seed_from_u64(11);
        let warm = arm(50, &[1.0; 50]);
        // Arms 2 and 3 are tied on fewest issued: the lower index goes first.
        let arms = [warm, arm(3, &[]), arm(1, &[]), arm(1, &[]), arm(4, &[0.0])];
        for _ in 0..100 {
            assert_eq!(policy.choose(&arms, &mut rng), Some(2));
        }
        // Issuing round by round fills the warming arms evenly, then competition starts.
        let mut arms = arms;
        let mut order = Vec::new();
        while let Some(i) = policy.choose(&arms, &mut rng) {
            if arms.iter().all(|a| a.issued >= 5) {
                break;
            }
            order.push(i);
            arms[i].issued += 1;
        }
        assert_eq!(order, vec![2, 3, 2, 3, 1, 2, 3, 1, 2, 3, 4]);
    }

    #[test]
    fn converges_to_best_bernoulli_arm() {
        let rates = [0.2, 0.5, 0.8];
        let policy = AllocationPolicy { min_rollouts: 10 };
        let mut rng = StdRng::seed_from_u64(2025);
        let mut arms = [arm(0, &[]); 3];
        let mut total = [0u32; 3];
        let mut last = [0u32; 3];
        play(&policy, &mut arms, &rates, &mut rng, 3_000, |round, i| {
            total[i] += 1;
            if round >= 2_000 {
                last[i] += 1;
            }
        });
        println!("convergence: all 3000 rounds {total:?}, last 1000 {last:?}");
        assert!(last[2] > 800, "last 1000: {last:?}");
        assert!(total.iter().all(|&t| t >= 10), "total: {total:?}");
    }

    #[test]
    fn warm_arms_without_rewards_keep_being_explored() {
        let policy = AllocationPolicy { min_rollouts: 5 };
        let mut rng = StdRng::seed_from_u64(9);
        let good = arm(200, &[0.9; 200]);
        let pending = arm(5, &[]);
        let arms = [good, pending];
        let picked = (0..2_000)
            .filter(|_| policy.choose(&arms, &mut rng) == Some(1))
            .count();
        // Draws N(0.9, 1) against a near-certain 0.9: about half the time.
        assert!((600..1_400).contains(&picked), "picked {picked}/2000");
    }

    #[test]
    fn variance_prior_keeps_small_samples_uncertain() {
        let Some((mean, sd)) = posterior(&arm(1, &[1.0])) else {
            panic!("one reward has a posterior");
        };
        assert_eq!((mean, sd), (1.0, 0.25));
        assert_eq!(posterior(&arm(3, &[])), None);
        // Identical rewards: still a non-zero width, shrinking with n.
        let Some((_, sd3)) = posterior(&arm(3, &[1.0; 3])) else {
            panic!("three rewards have a posterior");
        };
        let expected = ((2.0 * 0.0625 / 4.0) / 3.0_f64).sqrt();
        assert!((sd3 - expected).abs() < 1e-12, "{sd3} vs {expected}");
        // Many rewards: close to the sample standard error (0.5 / sqrt(400) = 0.025).
        let many: Vec<f64> = (0..400).map(|i| f64::from(i % 2)).collect();
        let Some((m, sd_many)) = posterior(&arm(400, &many)) else {
            panic!("many rewards have a posterior");
        };
        assert!((m - 0.5).abs() < 1e-12);
        assert!((sd_many - 0.025).abs() < 0.0005, "{sd_many}");
        // A lucky arm (3 straight successes, true rate 0.5) does not lock out a
        // well-measured 0.7 arm: it gets served, its rewards correct it, traffic moves on.
        let policy = AllocationPolicy { min_rollouts: 3 };
        let mut rng = StdRng::seed_from_u64(5);
        let rates = [0.5, 0.7];
        let solid: Vec<f64> = (0..100)
            .map(|i| if i % 10 < 7 { 1.0 } else { 0.0 })
            .collect();
        let mut arms = [arm(3, &[1.0; 3]), arm(100, &solid)];
        let mut late_solid = 0;
        play(&policy, &mut arms, &rates, &mut rng, 2_000, |round, i| {
            if round >= 1_500 && i == 1 {
                late_solid += 1;
            }
        });
        println!(
            "lucky arm: issued {:?}, solid share of last 500 {late_solid}",
            arms.map(|a| a.issued)
        );
        assert!(
            late_solid > 400,
            "solid arm got {late_solid} of the last 500"
        );
    }

    #[test]
    fn confidence_bounds_hand_example() {
        // Rewards 1, 2, 3, 4: mean 2.5, squared deviations 5, prior 2 * 0.25² = 0.125:
        // var = 5.125 / 5 = 1.025, half width = 1.96 * sqrt(1.025) / 2.
        let stats = arm(4, &[1.0, 2.0, 3.0, 4.0]);
        let Some((lo, hi)) = confidence_bounds(&stats, 1.96) else {
            panic!("four rewards have bounds");
        };
        let half = 1.96 * 1.025_f64.sqrt() / 2.0;
        assert!((lo - (2.5 - half)).abs() < 1e-12 && (hi - (2.5 + half)).abs() < 1e-12);
        assert_eq!(confidence_bounds(&arm(1, &[0.5]), 1.96), None);
        assert_eq!(confidence_bounds(&arm(0, &[]), 1.96), None);
    }

    #[test]
    fn a_perfect_streak_keeps_a_nonzero_interval() {
        // 20 rewards of 1.0 against a 0.95 candidate with 89 rewards: not confidently better.
        let streak = arm(20, &[1.0; 20]);
        let (streak_lo, _) = confidence_bounds(&streak, 1.96).unwrap();
        assert!(streak_lo < 1.0 && streak_lo > 0.9, "{streak_lo}");
        let mut steady_rewards = vec![1.0; 85];
        steady_rewards.extend([0.0; 4]);
        let (_, steady_hi) = confidence_bounds(&arm(89, &steady_rewards), 1.96).unwrap();
        assert!(steady_hi > streak_lo, "{steady_hi} vs {streak_lo}");
    }

    #[test]
    fn standard_normal_moments() {
        let mut rng = StdRng::seed_from_u64(123);
        let n = 100_000;
        let draws: Vec<f64> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        assert!(draws.iter().all(|d| d.is_finite()));
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        assert!(mean.abs() < 0.015, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        let beyond_2sd = draws.iter().filter(|d| d.abs() > 1.96).count() as f64 / n as f64;
        assert!((beyond_2sd - 0.05).abs() < 0.005, "tail {beyond_2sd}");
    }

    #[test]
    fn a_warming_arm_gets_at_most_the_explore_share() {
        let policy = AllocationPolicy { min_rollouts: 5 };
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // A warm arm with rewards, and a new one still warming up.
        let arms = [arm(50, &[0.6; 20]), arm(0, &[])];
        for (explore, lo, hi) in [(0.2, 0.17, 0.23), (0.05, 0.035, 0.065), (0.0, 0.0, 0.0)] {
            let n = 20_000;
            let warming = (0..n)
                .filter(|_| policy.choose_exploring(&arms, explore, &mut rng) == Some(1))
                .count() as f64
                / n as f64;
            assert!((lo..=hi).contains(&warming), "explore {explore}: {warming}");
        }
        // With no warm arm, warm-up goes first whatever the share.
        let all_new = [arm(0, &[]), arm(1, &[])];
        assert_eq!(policy.choose_exploring(&all_new, 0.0, &mut rng), Some(0));
    }
}
