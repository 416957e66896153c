//! The simulated task: K hidden facts, task instances that each need 1–3 of them, and the
//! exact expected accuracy of any instruction text.
//!
//! An answer to instance `i` served with system message `s` is correct with probability
//! `0.1 + 0.85 * (fraction of i's required facts whose full text appears in s)`.
//! A fact counts only when its whole text (`FACT-3: refunds take 5 business days`) is in
//! the instruction, so a garbled or truncated fact is worth nothing.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Accuracy with none of the required facts.
pub const FLOOR: f64 = 0.1;
/// Accuracy added by having all of the required facts.
pub const GAIN: f64 = 0.85;

/// The facts' texts after their `FACT-n: ` label (the first `--facts` are used).
const FACT_BODIES: [&str; 10] = [
    "refunds take 5 business days",
    "replacement cards arrive within 7 days by post",
    "wire transfers above 10000 EUR need a branch visit",
    "the overdraft fee is 25 EUR, waived once per calendar year",
    "savings interest is paid on the 1st of each month",
    "card disputes must be filed within 60 days of the statement",
    "the mobile app limits transfers to 2000 EUR per day",
    "joint accounts need both holders to sign a closure",
    "lost cards are blocked within 10 minutes of a call",
    "foreign ATM withdrawals cost 2 EUR each",
];

/// A keyword per fact, for the question texts (not used by the grading).
const TOPICS: [&str; 10] = [
    "a refund",
    "a replacement card",
    "a large wire transfer",
    "an overdraft fee",
    "savings interest",
    "a card dispute",
    "app transfer limits",
    "closing a joint account",
    "a lost card",
    "ATM fees abroad",
];

const OPENERS: [&str; 8] = [
    "You are the support assistant of Northwind Bank.",
    "You answer customer questions for Northwind Bank.",
    "Act as Northwind Bank's customer support agent.",
    "You are a helpful banking support assistant at Northwind Bank.",
    "You handle support tickets for Northwind Bank customers.",
    "You are Northwind Bank's customer service assistant.",
    "Your job is to answer Northwind Bank customers' questions.",
    "You work on the Northwind Bank help desk.",
];

const CLOSERS: [&str; 8] = [
    "Answer the customer's question accurately and briefly.",
    "Be precise, polite and concise.",
    "Give the exact rule that applies, in one or two sentences.",
    "State the relevant policy clearly and keep the answer short.",
    "Answer correctly; do not guess.",
    "Use the bank's policies below and answer in plain language.",
    "Reply with the specific answer the customer needs.",
    "Quote the applicable rule and nothing more.",
];

/// Number of distinct wordings [`Task::render`] can produce for one fact list.
pub const WORDINGS: usize = OPENERS.len() * CLOSERS.len();

/// The most facts a task can have.
pub const MAX_FACTS: usize = FACT_BODIES.len();

pub struct Task {
    /// Full fact texts, `FACT-1: ...` .. `FACT-K: ...`.
    pub facts: Vec<String>,
    /// For each instance, the indices (into `facts`) of the facts it needs, sorted.
    pub instances: Vec<Vec<usize>>,
}

impl Task {
    /// `k` facts (≤ [`MAX_FACTS`]) and `n` instances, each needing 1–3 distinct facts
    /// drawn uniformly; fixed by `seed`.
    pub fn new(seed: u64, k: usize, n: usize) -> Task {
        let k = k.clamp(1, MAX_FACTS);
        let facts = (0..k)
            .map(|i| format!("FACT-{}: {}", i + 1, FACT_BODIES[i]))
            .collect();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7a5c_0f1e_d00d_2026);
        let all: Vec<usize> = (0..k).collect();
        let instances = (0..n)
            .map(|_| {
                let need = rng.gen_range(1..=3usize).min(k);
                let mut v: Vec<usize> = all.choose_multiple(&mut rng, need).copied().collect();
                v.sort_unstable();
                v
            })
            .collect();
        Task { facts, instances }
    }

    /// The user message of instance `i`; [`Task::parse_instance`] reads `i` back.
    pub fn question(&self, i: usize) -> String {
        let topics: Vec<&str> = self.instances[i].iter().map(|&f| TOPICS[f]).collect();
        format!(
            "Ticket #{i}: a customer asks about {}. What should we tell them?",
            topics.join(" and ")
        )
    }

    pub fn parse_instance(text: &str) -> Option<usize> {
        let rest = text.split("Ticket #").nth(1)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    /// The facts whose full text appears in `text`, in order of first appearance.
    pub fn facts_in(&self, text: &str) -> Vec<usize> {
        let mut found: Vec<(usize, usize)> = self
            .facts
            .iter()
            .enumerate()
            .filter_map(|(i, f)| text.find(f.as_str()).map(|pos| (pos, i)))
            .collect();
        found.sort_unstable();
        found.into_iter().map(|(_, i)| i).collect()
    }

    /// Probability that instance `i` is answered correctly under system message `system`.
    pub fn p_correct(&self, i: usize, system: &str) -> f64 {
        let need = &self.instances[i];
        let have = need
            .iter()
            .filter(|&&f| system.contains(self.facts[f].as_str()))
            .count();
        FLOOR + GAIN * have as f64 / need.len() as f64
    }

    /// Exact expected accuracy of an instruction over the uniform instance distribution.
    pub fn accuracy(&self, instruction: &str) -> f64 {
        let n = self.instances.len() as f64;
        (0..self.instances.len())
            .map(|i| self.p_correct(i, instruction))
            .sum::<f64>()
            / n
    }

    /// The fact numbers (1-based) in an instruction, e.g. `{1,3,5}`, for reports.
    pub fn fact_set(&self, instruction: &str) -> String {
        let mut v: Vec<usize> = self.facts_in(instruction).iter().map(|i| i + 1).collect();
        v.sort_unstable();
        let parts: Vec<String> = v.iter().map(usize::to_string).collect();
        format!("{{{}}}", parts.join(","))
    }

    /// The feedback a grader writes for a wrong answer to instance `i`: the facts the
    /// reference answer relies on.
    pub fn wrong_feedback(&self, i: usize) -> String {
        let needed: Vec<&str> = self.instances[i]
            .iter()
            .map(|&f| self.facts[f].as_str())
            .collect();
        format!("wrong: the answer needed {}", needed.join("; "))
    }

    /// The session's starting instruction: no facts.
    pub fn baseline() -> String {
        format!("{} {}", OPENERS[0], "Answer the customer's question.")
    }

    /// An instruction with the given wording (< [`WORDINGS`]) and facts, in that order.
    pub fn render(&self, wording: usize, facts: &[usize]) -> String {
        let opener = OPENERS[wording % OPENERS.len()];
        let closer = CLOSERS[(wording / OPENERS.len()) % CLOSERS.len()];
        let mut s = format!("{opener} {closer}");
        if !facts.is_empty() {
            s.push_str("\nFacts to use:");
            for &f in facts {
                s.push_str("\n- ");
                s.push_str(&self.facts[f]);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_bounds_and_parsing() {
        let t = Task::new(1, 6, 50);
        assert!((t.accuracy(&Task::baseline()) - FLOOR).abs() < 1e-12);
        let all: Vec<usize> = (0..6).collect();
        assert!((t.accuracy(&t.render(5, &all)) - (FLOOR + GAIN)).abs() < 1e-12);
        assert_eq!(Task::parse_instance(&t.question(17)), Some(17));
        assert_eq!(t.facts_in(&t.render(0, &[4, 1])), vec![4, 1]);
    }
}
