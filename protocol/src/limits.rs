//! How large what the master's registry and the agents' checkpoints keep
//! may be.
//!
//! Both are JSON files read back after a restart with a bound on their
//! size; anything accepted from a peer that goes into them is measured
//! when it arrives, so nothing is accepted that a restart could not read
//! back. A message over its limit is refused with a message saying so.

use serde::Serialize;

/// Largest agent description (`AgentInfo`: hostname, resources,
/// attributes) the registry keeps, as JSON. With the master's default of
/// at most 50,000 agents this keeps their part of the registry within
/// 200 MiB of its 256 MiB read limit.
pub const MAX_AGENT_INFO_BYTES: usize = 4096;

/// Largest `FrameworkInfo` the registry keeps, as JSON.
pub const MAX_FRAMEWORK_INFO_BYTES: usize = 4096;

/// Largest `TaskInfo` an agent checkpoints, as JSON (its checkpoint files
/// are read back up to 16 MiB).
pub const MAX_TASK_INFO_BYTES: usize = 1 << 20;

/// How many bytes `value` takes as JSON, the registry's and checkpoints'
/// format. A value that cannot be encoded counts as too large.
pub fn encoded_size<T: Serialize>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// Why `value` (a `what`) may not be kept, if it is larger than `limit`.
pub fn too_large<T: Serialize>(what: &str, value: &T, limit: usize) -> Option<String> {
    let size = encoded_size(value);
    (size > limit)
        .then(|| format!("the {what} takes {size} bytes; at most {limit} are kept across restarts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_measured_as_json() {
        assert_eq!(encoded_size(&"abc"), 5);
        assert_eq!(too_large("name", &"abc", 5), None);
        let refusal = too_large("name", &"abcd", 5).unwrap();
        assert!(
            refusal.contains("6 bytes") && refusal.contains("at most 5"),
            "{refusal}"
        );
    }
}
