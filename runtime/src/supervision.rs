//! When a failed process is restarted, and when its supervisor gives up.
//!
//! Pure bookkeeping: time is passed in, nothing here sleeps or spawns. The
//! process shell ([`crate::process`]) asks [`RestartTracker::on_failure`]
//! after each panic or failure and carries out the answer.
//!
//! The rule is Erlang's restart intensity: at most `max_restarts` restarts
//! within any `within` window; one more failure inside the window and the
//! supervisor gives up and reports to the parent. Restarts are spaced by an
//! exponential backoff so a process that fails at once does not spin.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// How a process is restarted after it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Most restarts allowed within `within`; zero means never restart.
    pub max_restarts: u32,
    /// The sliding window restarts are counted in.
    pub within: Duration,
    /// Wait before the first restart of a burst.
    pub initial_backoff: Duration,
    /// Longest wait; the backoff doubles up to this.
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    /// Five restarts a minute, waiting 100 ms, 200 ms, … up to 10 s.
    fn default() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 5,
            within: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RestartPolicy {
    /// Never restart: the first failure is reported to the parent.
    pub fn never() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 0,
            ..RestartPolicy::default()
        }
    }
}

/// What the supervisor does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart from the factory after this wait.
    RestartAfter(Duration),
    /// Too many failures: stop and report to the parent.
    GiveUp { restarts: u32 },
}

/// The restart history of one process.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> RestartTracker {
        RestartTracker {
            policy,
            recent: VecDeque::new(),
        }
    }

    /// Records a failure at `now` and decides.
    pub fn on_failure(&mut self, now: Instant) -> RestartDecision {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= self.policy.within {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let restarts = self.recent.len() as u32;
        if restarts >= self.policy.max_restarts {
            return RestartDecision::GiveUp { restarts };
        }
        let backoff = self
            .policy
            .initial_backoff
            .saturating_mul(1u32 << restarts.min(20))
            .min(self.policy.max_backoff);
        self.recent.push_back(now);
        RestartDecision::RestartAfter(backoff)
    }
}

/// Why a process failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A handler panicked; the panic message.
    Panicked(String),
    /// The process stopped itself with an error.
    Failed(String),
}

impl Failure {
    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> Failure {
        let message = if let Some(text) = payload.downcast_ref::<&str>() {
            (*text).to_owned()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "panic with a non-text payload".to_owned()
        };
        Failure::Panicked(message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Panicked(message) => write!(f, "panicked: {message}"),
            Failure::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            within: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        }
    }

    /// Feeds failures at the given offsets (seconds) and checks each decision.
    fn check(policy: RestartPolicy, failures: &[(u64, RestartDecision)]) {
        let start = Instant::now();
        let mut tracker = RestartTracker::new(policy);
        for (at, expected) in failures {
            let decision = tracker.on_failure(start + Duration::from_secs(*at));
            assert_eq!(decision, *expected, "failure at {at}s");
        }
    }

    use RestartDecision::{GiveUp, RestartAfter};

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        check(
            policy(),
            &[
                (0, RestartAfter(Duration::from_millis(100))),
                (1, RestartAfter(Duration::from_millis(200))),
                (2, RestartAfter(Duration::from_millis(300))),
                (3, GiveUp { restarts: 3 }),
            ],
        );
    }

    #[test]
    fn old_failures_leave_the_window() {
        check(
            policy(),
            &[
                (0, RestartAfter(Duration::from_millis(100))),
                (1, RestartAfter(Duration::from_millis(200))),
                (2, RestartAfter(Duration::from_millis(300))),
                // At 11 s the failures at 0 s and 1 s have left the window.
                (11, RestartAfter(Duration::from_millis(200))),
                (12, RestartAfter(Duration::from_millis(200))),
                (25, RestartAfter(Duration::from_millis(100))),
            ],
        );
    }

    #[test]
    fn never_gives_up_at_once() {
        check(RestartPolicy::never(), &[(0, GiveUp { restarts: 0 })]);
    }
}
