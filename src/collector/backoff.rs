//! Reconnect delays: exponential, capped, with full jitter (a random delay between zero and the
//! capped exponential), so that many collectors do not reconnect in step.

use std::time::Duration;

/// Delays between reconnection attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// Delays starting around `first`, never above `cap`.
    pub fn new(first: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff {
            first,
            cap: cap.max(first),
            attempt: 0,
            seed: seed | 1,
        }
    }

    /// The ceiling of the next delay: `first × 2^attempt`, at most the cap.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.cap)
    }

    /// The next delay: uniformly random up to the ceiling, which then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        // xorshift: jitter needs no cryptographic randomness.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.seed % (millis + 1))
    }

    /// After a success, start again from the first delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_but_never_exceed_the_cap() {
        let cap = Duration::from_millis(2_000);
        let mut backoff = Backoff::new(Duration::from_millis(100), cap, 42);
        let ceilings: Vec<u128> = (0..8)
            .map(|_| {
                let ceiling = backoff.ceiling();
                let delay = backoff.next_delay();
                assert!(delay <= ceiling, "{delay:?} above its ceiling {ceiling:?}");
                assert!(delay <= cap, "{delay:?} above the cap");
                ceiling.as_millis()
            })
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        for _ in 0..1_000 {
            assert!(backoff.next_delay() <= cap);
        }
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut backoff = Backoff::new(
            Duration::from_millis(1_000),
            Duration::from_millis(1_000),
            7,
        );
        let delays: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| backoff.next_delay()).collect();
        assert!(
            delays.len() > 30,
            "jitter should spread the delays: {delays:?}"
        );
    }
}
