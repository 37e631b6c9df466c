//! Status updates, delivered at least once and in order per task.
//!
//! Each task has a stream of updates. Only the head of a stream is in
//! flight: it is sent, then resent with backoff (10 s doubling to 10 min,
//! Mesos's figures) until the framework's acknowledgement arrives through
//! the master; then the next update goes. An acknowledgement for anything
//! but the head (a duplicate, a stale one) changes nothing.
//!
//! A pure state machine: the agent process asks what to send and when.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use strata_protocol::{FrameworkId, TaskId, TaskStatus, UpdateId};

/// First wait before resending an unacknowledged update.
pub const FIRST_RETRY: Duration = Duration::from_secs(10);

/// Longest wait between resends.
pub const LAST_RETRY: Duration = Duration::from_secs(600);

/// Most updates waiting in one task's stream; beyond it the oldest
/// non-terminal waiting update is dropped (a later state supersedes it).
pub const MAX_STREAM_LENGTH: usize = 1000;

/// An update to send to the master now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub framework_id: FrameworkId,
    pub status: TaskStatus,
}

#[derive(Debug)]
struct Stream {
    pending: VecDeque<TaskStatus>,
    /// When the head is resent next, if it has been sent.
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// Every task's stream of updates.
#[derive(Debug)]
pub struct StatusUpdates {
    streams: BTreeMap<(FrameworkId, TaskId), Stream>,
    first_retry: Duration,
    last_retry: Duration,
}

impl Default for StatusUpdates {
    fn default() -> StatusUpdates {
        StatusUpdates::new()
    }
}

impl StatusUpdates {
    /// Streams resent after [`FIRST_RETRY`], doubling up to [`LAST_RETRY`].
    pub fn new() -> StatusUpdates {
        StatusUpdates::with_retries(FIRST_RETRY, LAST_RETRY)
    }

    /// Streams with other resend waits (tests, simulation).
    pub fn with_retries(first_retry: Duration, last_retry: Duration) -> StatusUpdates {
        StatusUpdates {
            streams: BTreeMap::new(),
            first_retry,
            last_retry: last_retry.max(first_retry),
        }
    }

    /// Queues an update (it must carry an update id); returns it if it
    /// should be sent now (its stream had nothing in flight).
    pub fn push(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        status: TaskStatus,
    ) -> Option<Forward> {
        let key = (framework_id.clone(), status.task_id.clone());
        let first_retry = self.first_retry;
        let stream = self.streams.entry(key).or_insert_with(|| Stream {
            pending: VecDeque::new(),
            retry_at: None,
            backoff: first_retry,
        });
        if stream.pending.len() >= MAX_STREAM_LENGTH {
            // Keep the head (in flight) and every terminal update.
            if let Some(index) =
                (1..stream.pending.len()).find(|&index| !stream.pending[index].state.is_terminal())
            {
                stream.pending.remove(index);
            }
        }
        stream.pending.push_back(status);
        if stream.pending.len() > 1 {
            return None;
        }
        stream.retry_at = Some(now + stream.backoff);
        stream.pending.front().map(|status| Forward {
            framework_id: framework_id.clone(),
            status: status.clone(),
        })
    }

    /// The framework acknowledged `update_id`; returns the next update of
    /// that task's stream if there is one to send.
    pub fn acknowledge(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        update_id: UpdateId,
    ) -> Option<Forward> {
        let key = (framework_id.clone(), task_id.clone());
        let stream = self.streams.get_mut(&key)?;
        if stream.pending.front().and_then(|status| status.update_id) != Some(update_id) {
            return None;
        }
        stream.pending.pop_front();
        stream.backoff = self.first_retry;
        let Some(next) = stream.pending.front().cloned() else {
            self.streams.remove(&key);
            return None;
        };
        stream.retry_at = Some(now + stream.backoff);
        Some(Forward {
            framework_id: framework_id.clone(),
            status: next,
        })
    }

    /// Heads whose resend time has come; each is rescheduled with a
    /// doubled wait.
    pub fn due(&mut self, now: Instant) -> Vec<Forward> {
        let mut due = Vec::new();
        for ((framework_id, _), stream) in &mut self.streams {
            if stream.retry_at.is_some_and(|at| at <= now)
                && let Some(head) = stream.pending.front()
            {
                stream.backoff = (stream.backoff * 2).min(self.last_retry);
                stream.retry_at = Some(now + stream.backoff);
                due.push(Forward {
                    framework_id: framework_id.clone(),
                    status: head.clone(),
                });
            }
        }
        due
    }

    /// Every head, to send at once (after registering with a master).
    pub fn heads(&mut self, now: Instant) -> Vec<Forward> {
        for stream in self.streams.values_mut() {
            stream.backoff = self.first_retry;
            stream.retry_at = Some(now + stream.backoff);
        }
        self.streams
            .iter()
            .filter_map(|((framework_id, _), stream)| {
                stream.pending.front().map(|status| Forward {
                    framework_id: framework_id.clone(),
                    status: status.clone(),
                })
            })
            .collect()
    }

    /// A task's updates not yet acknowledged, oldest first.
    pub fn pending(&self, framework_id: &FrameworkId, task_id: &TaskId) -> Vec<TaskStatus> {
        self.streams
            .get(&(framework_id.clone(), task_id.clone()))
            .map(|stream| stream.pending.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets a framework's streams (it was shut down).
    pub fn remove_framework(&mut self, framework_id: &FrameworkId) {
        self.streams.retain(|(owner, _), _| owner != framework_id);
    }

    /// Updates not yet acknowledged, all tasks.
    pub fn unacknowledged(&self) -> usize {
        self.streams
            .values()
            .map(|stream| stream.pending.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_protocol::{Source, TaskState};

    fn status(task: &str, state: TaskState, id: u128) -> TaskStatus {
        TaskStatus {
            task_id: TaskId::new(task).unwrap(),
            state,
            source: Source::Executor,
            reason: None,
            message: String::new(),
            agent_id: None,
            executor_id: None,
            update_id: Some(UpdateId(id)),
            timestamp_ms: 0,
            sandbox: None,
        }
    }

    fn sent(forward: Option<Forward>) -> Option<(String, TaskState)> {
        forward.map(|forward| (forward.status.task_id.to_string(), forward.status.state))
    }

    #[test]
    fn one_update_in_flight_per_task_in_order() {
        let now = Instant::now();
        let framework = FrameworkId::new("f").unwrap();
        let task = TaskId::new("t").unwrap();
        let mut updates = StatusUpdates::new();
        assert_eq!(
            sent(updates.push(now, &framework, status("t", TaskState::Running, 1))),
            Some(("t".into(), TaskState::Running))
        );
        // Queued behind the head.
        assert_eq!(
            updates.push(now, &framework, status("t", TaskState::Finished, 2)),
            None
        );
        // Another task's stream is independent.
        assert!(
            updates
                .push(now, &framework, status("u", TaskState::Running, 3))
                .is_some()
        );
        // A stale or duplicate acknowledgement changes nothing.
        assert_eq!(
            updates.acknowledge(now, &framework, &task, UpdateId(2)),
            None
        );
        assert_eq!(
            sent(updates.acknowledge(now, &framework, &task, UpdateId(1))),
            Some(("t".into(), TaskState::Finished))
        );
        assert_eq!(
            updates.acknowledge(now, &framework, &task, UpdateId(1)),
            None
        );
        assert_eq!(
            updates.acknowledge(now, &framework, &task, UpdateId(2)),
            None
        );
        assert_eq!(updates.unacknowledged(), 1);
    }

    #[test]
    fn unacknowledged_heads_are_resent_with_backoff() {
        let start = Instant::now();
        let framework = FrameworkId::new("f").unwrap();
        let mut updates = StatusUpdates::new();
        updates.push(start, &framework, status("t", TaskState::Running, 1));
        let resent_at: Vec<u64> = (1..=200)
            .filter(|second| !updates.due(start + Duration::from_secs(*second)).is_empty())
            .collect();
        assert_eq!(resent_at, vec![10, 30, 70, 150]);
        updates.acknowledge(start, &framework, &TaskId::new("t").unwrap(), UpdateId(1));
        assert!(updates.due(start + Duration::from_secs(10_000)).is_empty());
    }
}
