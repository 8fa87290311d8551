//! Per-principal call rates: each principal (by subject) may start at most a configured number of
//! calls per second, with a burst of one second's worth, so that one caller cannot take the
//! service from the others. A call over the rate is RESOURCE_EXHAUSTED with a `RetryInfo` detail
//! saying when the next one would be accepted. GCRA, from `governor`.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{Quota, RateLimiter, clock::Clock as _};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// Calls per second per principal, unless configured otherwise.
pub const DEFAULT_CALLS_PER_SECOND: u32 = 2_000;
/// How often the state of principals that have not called lately is dropped.
pub const FORGET_INTERVAL: Duration = Duration::from_secs(60);

/// The limiter shared by every connection.
#[derive(Clone)]
pub struct CallRate {
    per_second: NonZeroU32,
    limiter: Arc<governor::DefaultKeyedRateLimiter<String>>,
}

impl std::fmt::Debug for CallRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRate")
            .field("per_second", &self.per_second)
            .finish_non_exhaustive()
    }
}

impl CallRate {
    /// At most `per_second` calls per second per principal.
    pub fn new(per_second: NonZeroU32) -> CallRate {
        CallRate {
            per_second,
            limiter: Arc::new(RateLimiter::keyed(Quota::per_second(per_second))),
        }
    }

    /// Counts a call of `subject`; RESOURCE_EXHAUSTED with the wait when it is over its rate.
    pub fn check(&self, subject: &str) -> Result<(), Status> {
        let subject = subject.to_owned();
        match self.limiter.check_key(&subject) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let wait = wait.max(Duration::from_millis(1));
                Err(Status::with_error_details(
                    Code::ResourceExhausted,
                    format!(
                        "principal {subject:?} is over its rate of {} calls per second: retry in {} ms",
                        self.per_second,
                        wait.as_millis()
                    ),
                    ErrorDetails::with_retry_info(Some(wait)),
                ))
            }
        }
    }

    /// Drops the state of principals whose rate is back to full, every [`FORGET_INTERVAL`], for
    /// as long as the limiter is in use.
    pub fn forget_idle(&self) {
        let limiter = Arc::downgrade(&self.limiter);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(FORGET_INTERVAL);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(limiter) = limiter.upgrade() else {
                    return;
                };
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_over_its_rate_is_told_when_to_retry_and_others_go_on() {
        let rate = CallRate::new(NonZeroU32::new(5).expect("non-zero"));
        for _ in 0..5 {
            rate.check("busy").expect("within the burst");
        }
        let refused = rate.check("busy").expect_err("over the rate");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.message().contains("\"busy\""), "{refused:?}");
        let retry = refused
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
            .expect("retry info");
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_millis(200),
            "{retry:?}"
        );
        rate.check("quiet")
            .expect("another principal is not limited by the busy one");
    }
}
