//! The master's registry: what must survive a master restart.
//!
//! Admitted and unreachable agents (their info and address), frameworks
//! (their info, with the failover timeout), the ids of removed frameworks
//! (so they cannot come back), and the master's epoch, kept as versioned
//! JSON in `<work>/meta/master/registry.json` and written atomically
//! ([`strata_runtime::durable`]). A restarted master reads it, takes the
//! next epoch, writes it back before serving, then waits a bounded time
//! for its agents to re-register (see [`crate::books`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use strata_runtime::durable::{Disk, WriteTicket};

use serde::{Deserialize, Serialize};
use strata_protocol::{AgentInfo, FrameworkId, FrameworkInfo};
use strata_runtime::Upid;

/// The format version written; readers refuse others.
pub const FORMAT_VERSION: u32 = 1;

/// Largest registry read back (about 100,000 agents); a larger file is
/// refused as corrupt.
const MAX_REGISTRY_BYTES: u64 = 256 << 20;

/// What the registry holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub version: u32,
    /// The epoch of the master that wrote it; each master incarnation
    /// takes a higher one.
    pub epoch: u64,
    /// Shared with the books, which keep each agent's entry between
    /// writes (see `Books::registry`).
    pub agents: Vec<Arc<RegisteredAgent>>,
    pub frameworks: Vec<FrameworkInfo>,
    /// Most recently removed last.
    pub removed_frameworks: Vec<FrameworkId>,
    /// How many agent and framework ids the masters before handed out,
    /// so a restarted master never hands out one of theirs again.
    #[serde(default)]
    pub agents_admitted: u64,
    #[serde(default)]
    pub frameworks_created: u64,
    /// Agents an operator marked gone, oldest first: never admitted
    /// again.
    #[serde(default)]
    pub gone_agents: Vec<strata_protocol::AgentId>,
}

impl Registry {
    /// The registry of a master that never ran.
    pub fn empty() -> Registry {
        Registry {
            version: FORMAT_VERSION,
            epoch: 0,
            agents: Vec::new(),
            frameworks: Vec::new(),
            removed_frameworks: Vec::new(),
            agents_admitted: 0,
            frameworks_created: 0,
            gone_agents: Vec::new(),
        }
    }
}

/// One agent the master admitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredAgent {
    /// With its id set; shared with the books.
    pub info: Arc<AgentInfo>,
    pub pid: Upid,
    /// The name in the certificate that registered it; only that
    /// certificate may re-register it.
    #[serde(default)]
    pub certificate_name: String,
    /// Whether the master had lost it.
    pub unreachable: bool,
}

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the master's registry {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the master's registry {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the master's registry {} is not valid: {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// Where a master keeps its registry.
pub fn path(work_dir: &Path) -> PathBuf {
    work_dir.join("meta").join("master").join("registry.json")
}

/// Reads the registry; `None` when there is none yet.
pub fn load(disk: &Disk, path: &Path) -> Result<Option<Registry>, RegistryError> {
    let bytes = match disk.read_bounded(path, MAX_REGISTRY_BYTES) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RegistryError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse(path, &bytes).map(Some)
}

/// Reads a registry from `bytes` (the file at `path`), checking its
/// version; anything else is an error naming the file.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Registry, RegistryError> {
    let invalid = |reason: String| RegistryError::Invalid {
        path: path.to_owned(),
        reason,
    };
    #[derive(Deserialize)]
    struct Probe {
        version: u32,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if probe.version != FORMAT_VERSION {
        return Err(invalid(format!(
            "format version {} (this master reads {FORMAT_VERSION})",
            probe.version
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))
}

/// Writes the registry atomically and durably to the ticket's file, in
/// its place among this process's writes of it ([`Disk::ticket`], taken
/// when the write was decided): a write of a master since replaced, put
/// in place after its successor's, is refused rather than landing over
/// it.
pub fn save(disk: &Disk, ticket: WriteTicket, registry: &Registry) -> Result<(), RegistryError> {
    let path = ticket.path().to_owned();
    let json = serde_json::to_vec(registry).map_err(|e| RegistryError::Invalid {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    disk.write_in_order(ticket, &json)
        .map_err(|source| RegistryError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_round_trip_and_bad_ones_are_refused() {
        let dir = std::env::temp_dir().join(format!("strata-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = path(&dir);
        assert_eq!(load(&Disk::real(), &file).unwrap(), None);
        let mut registry = Registry::empty();
        registry.epoch = 7;
        registry.frameworks.push(FrameworkInfo::new("f", "u"));
        registry.agents.push(Arc::new(RegisteredAgent {
            info: Arc::new(AgentInfo {
                id: Some(strata_protocol::AgentId::new("a1").unwrap()),
                hostname: "h".into(),
                resources: "cpus:1;mem:64".parse().unwrap(),
                attributes: Default::default(),
            }),
            pid: "agent@127.0.0.1:5051".parse().unwrap(),
            certificate_name: "agent-a1".into(),
            unreachable: true,
        }));
        save(&Disk::real(), Disk::real().ticket(&file), &registry).unwrap();
        assert_eq!(load(&Disk::real(), &file).unwrap(), Some(registry));
        std::fs::write(&file, br#"{"version": 2}"#).unwrap();
        assert!(
            load(&Disk::real(), &file)
                .unwrap_err()
                .to_string()
                .contains("format version 2")
        );
        std::fs::write(&file, b"{").unwrap();
        assert!(
            load(&Disk::real(), &file)
                .unwrap_err()
                .to_string()
                .contains("not valid")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
