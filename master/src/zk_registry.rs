//! The registry in ZooKeeper, for masters that contend for leadership
//! there (`--zk`): what [`crate::registry`] keeps in a file, under
//! `PATH/registry`, in bounded nodes.
//!
//! - `PATH/registry` holds a header (format, epoch, id counters) and is
//!   the fence: every write is a multi whose first operation sets or
//!   checks the header at the version this master last wrote, so once a
//!   newer leader has written, a deposed leader's writes all fail.
//! - `PATH/registry/{agents,frameworks}/NNNN` hold the agents and
//!   frameworks whose id hashes to bucket NNNN (of [`BUCKETS`]), as JSON
//!   objects by id; `PATH/registry/{removed,gone}/NNNN` the ids of removed
//!   frameworks and gone agents with the order they were added in.
//!
//! A write sends only the buckets that changed since the last, in multis
//! of at most [`BATCH_BYTES`]; the header goes first, so id counters are
//! never behind the entries they cover. Ids never become node names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata_zk::{Op, Session, ZkError};

use crate::registry::{FORMAT_VERSION, RegisteredAgent, Registry};

/// How many buckets each collection is spread over: 50,000 agents make
/// buckets of about 20 KiB.
pub const BUCKETS: u32 = 1024;

/// The most bytes of one multi.
pub const BATCH_BYTES: usize = 512 * 1024;

/// The largest bucket written; one larger is an error (ZooKeeper's limit
/// is 1 MiB).
const MAX_BUCKET_BYTES: usize = 900 * 1024;

const COLLECTIONS: [&str; 4] = ["agents", "frameworks", "removed", "gone"];

/// Why the registry in ZooKeeper could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZkRegistryError {
    #[error("ZooKeeper: {0}")]
    ZooKeeper(#[from] ZkError),
    /// Another master wrote the registry since this one did: it leads.
    #[error("another master wrote the registry; this one no longer leads")]
    Deposed,
    #[error("the registry node {node} is not valid: {reason}")]
    Invalid { node: String, reason: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    version: u32,
    epoch: u64,
    agents_admitted: u64,
    frameworks_created: u64,
    /// The next order number of a removed framework or gone agent.
    next_ordinal: u64,
}

/// The registry as this master last read or wrote it in ZooKeeper.
#[derive(Debug)]
pub struct ZkRegistry {
    root: String,
    /// The header's version as this master last wrote or read it.
    fence: i32,
    /// Each bucket's bytes as last written (`agents/0007` → JSON).
    written: BTreeMap<String, Vec<u8>>,
    /// The order numbers of removed frameworks (`removed`) and gone
    /// agents (`gone`), by id.
    ordinals: HashMap<(&'static str, String), u64>,
    next_ordinal: u64,
}

/// What one write sends, and what the registry holds once it is done.
#[derive(Debug)]
pub struct Plan {
    batches: Vec<Vec<Op>>,
    after: BTreeMap<String, Vec<u8>>,
}

impl Plan {
    /// How many multis it takes.
    pub fn batches(&self) -> usize {
        self.batches.len()
    }
}

/// The bucket of `id`: FNV-1a, so every master computes the same.
fn bucket_of(id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % BUCKETS
}

fn bucket_key(collection: &str, id: &str) -> String {
    format!("{collection}/{:04}", bucket_of(id))
}

fn invalid(node: &str, reason: impl std::fmt::Display) -> ZkRegistryError {
    ZkRegistryError::Invalid {
        node: node.to_owned(),
        reason: reason.to_string(),
    }
}

impl ZkRegistry {
    /// Reads the registry under `base` (`None` when no master wrote one),
    /// creating the nodes it lives in when missing.
    pub async fn recover(
        session: &dyn Session,
        base: &str,
    ) -> Result<(ZkRegistry, Option<Registry>), ZkRegistryError> {
        let root = format!("{base}/registry");
        strata_zk::ensure_path(session, &root).await?;
        for collection in COLLECTIONS {
            match session
                .create(
                    &format!("{root}/{collection}"),
                    Vec::new(),
                    strata_zk::CreateMode::Persistent,
                )
                .await
            {
                Ok(_) | Err(ZkError::NodeExists) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let (data, fence) = session.get(&root).await?.ok_or(ZkError::NoNode)?;
        let mut zk = ZkRegistry {
            root: root.clone(),
            fence,
            written: BTreeMap::new(),
            ordinals: HashMap::new(),
            next_ordinal: 0,
        };
        if data.is_empty() {
            return Ok((zk, None));
        }
        let header: Header = serde_json::from_slice(&data).map_err(|e| invalid(&root, e))?;
        if header.version != FORMAT_VERSION {
            return Err(invalid(
                &root,
                format!(
                    "format version {} (this master reads {FORMAT_VERSION})",
                    header.version
                ),
            ));
        }
        zk.next_ordinal = header.next_ordinal;
        let mut registry = Registry::empty();
        registry.epoch = header.epoch;
        registry.agents_admitted = header.agents_admitted;
        registry.frameworks_created = header.frameworks_created;
        let mut removed = Vec::new();
        let mut gone = Vec::new();
        for collection in COLLECTIONS {
            let dir = format!("{root}/{collection}");
            let names = session.children(&dir).await?;
            // Every read is sent before the first answer is awaited.
            let reads: Vec<_> = names
                .iter()
                .filter(|name| valid_bucket(name))
                .map(|name| (name.clone(), session.get(&format!("{dir}/{name}"))))
                .collect();
            for (name, read) in reads {
                let node = format!("{dir}/{name}");
                let Some((bytes, _)) = read.await? else {
                    continue;
                };
                // An entry must be in its id's bucket, so none is read
                // twice.
                let misplaced = |id: &str| {
                    format!("{collection}/{:04}", bucket_of(id)) != format!("{collection}/{name}")
                };
                match collection {
                    "agents" => {
                        let bucket: BTreeMap<String, RegisteredAgent> =
                            serde_json::from_slice(&bytes).map_err(|e| invalid(&node, e))?;
                        for (id, agent) in bucket {
                            if misplaced(&id)
                                || agent.info.id.as_ref().is_none_or(|own| own.as_str() != id)
                            {
                                return Err(invalid(
                                    &node,
                                    format!("agent {id:?} does not belong here"),
                                ));
                            }
                            registry.agents.push(std::sync::Arc::new(agent));
                        }
                    }
                    "frameworks" => {
                        let bucket: BTreeMap<String, strata_protocol::FrameworkInfo> =
                            serde_json::from_slice(&bytes).map_err(|e| invalid(&node, e))?;
                        for (id, framework) in bucket {
                            if misplaced(&id)
                                || framework.id.as_ref().is_none_or(|own| own.as_str() != id)
                            {
                                return Err(invalid(
                                    &node,
                                    format!("framework {id:?} does not belong here"),
                                ));
                            }
                            registry.frameworks.push(framework);
                        }
                    }
                    _ => {
                        let bucket: BTreeMap<String, u64> =
                            serde_json::from_slice(&bytes).map_err(|e| invalid(&node, e))?;
                        let list = if collection == "removed" {
                            &mut removed
                        } else {
                            &mut gone
                        };
                        for (id, ordinal) in bucket {
                            if misplaced(&id) {
                                return Err(invalid(&node, format!("{id:?} does not belong here")));
                            }
                            let kind = if collection == "removed" {
                                "removed"
                            } else {
                                "gone"
                            };
                            zk.ordinals.insert((kind, id.clone()), ordinal);
                            list.push((ordinal, id));
                        }
                    }
                }
                zk.written.insert(format!("{collection}/{name}"), bytes);
            }
        }
        removed.sort_unstable();
        gone.sort_unstable();
        for (_, id) in removed {
            let id = strata_protocol::FrameworkId::new(&id).map_err(|e| invalid(&root, e))?;
            registry.removed_frameworks.push(id);
        }
        for (_, id) in gone {
            let id = strata_protocol::AgentId::new(&id).map_err(|e| invalid(&root, e))?;
            registry.gone_agents.push(id);
        }
        Ok((zk, Some(registry)))
    }

    /// What writing `registry` takes: the buckets that changed since the
    /// last write, after the header (set at this master's version).
    pub fn plan(&mut self, registry: &Registry) -> Result<Plan, ZkRegistryError> {
        let mut buckets: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
        let mut put = |collection: &str, id: &str, value: serde_json::Value| {
            buckets
                .entry(bucket_key(collection, id))
                .or_default()
                .insert(id.to_owned(), value);
        };
        let json = |value: Result<serde_json::Value, serde_json::Error>| {
            value.map_err(|e| invalid("registry", e))
        };
        for agent in &registry.agents {
            if let Some(id) = &agent.info.id {
                put("agents", id.as_str(), json(serde_json::to_value(agent))?);
            }
        }
        for framework in &registry.frameworks {
            if let Some(id) = &framework.id {
                put(
                    "frameworks",
                    id.as_str(),
                    json(serde_json::to_value(framework))?,
                );
            }
        }
        let mut kept = HashMap::new();
        let lists: [(&'static str, Vec<&str>); 2] = [
            (
                "removed",
                registry
                    .removed_frameworks
                    .iter()
                    .map(|id| id.as_str())
                    .collect(),
            ),
            (
                "gone",
                registry.gone_agents.iter().map(|id| id.as_str()).collect(),
            ),
        ];
        for (collection, ids) in lists {
            for id in ids {
                let key = (collection, id.to_owned());
                let ordinal = match self.ordinals.get(&key) {
                    Some(ordinal) => *ordinal,
                    None => {
                        self.next_ordinal += 1;
                        self.next_ordinal - 1
                    }
                };
                put(collection, id, serde_json::Value::from(ordinal));
                kept.insert(key, ordinal);
            }
        }
        self.ordinals = kept;
        let mut after = BTreeMap::new();
        for (key, bucket) in buckets {
            let bytes = serde_json::to_vec(&bucket).map_err(|e| invalid(&key, e))?;
            if bytes.len() > MAX_BUCKET_BYTES {
                return Err(invalid(
                    &key,
                    format!("{} bytes, more than a ZooKeeper node holds", bytes.len()),
                ));
            }
            after.insert(key, bytes);
        }
        let header = serde_json::to_vec(&Header {
            version: FORMAT_VERSION,
            epoch: registry.epoch,
            agents_admitted: registry.agents_admitted,
            frameworks_created: registry.frameworks_created,
            next_ordinal: self.next_ordinal,
        })
        .map_err(|e| invalid(&self.root, e))?;
        let mut changes = Vec::new();
        // Gone agents and removed frameworks first: should a write split
        // in several multis stop midway, an agent may be both registered
        // and gone (and stays refused), never neither.
        let first = |key: &&String| key.starts_with("gone/") || key.starts_with("removed/");
        let ordered = after
            .iter()
            .filter(|(key, _)| first(key))
            .chain(after.iter().filter(|(key, _)| !first(key)));
        for (key, bytes) in ordered {
            let path = format!("{}/{key}", self.root);
            match self.written.get(key) {
                Some(before) if before == bytes => {}
                Some(_) => changes.push(Op::Set {
                    path,
                    data: bytes.clone(),
                    version: None,
                }),
                None => changes.push(Op::Create {
                    path,
                    data: bytes.clone(),
                }),
            }
        }
        for key in self.written.keys().filter(|key| !after.contains_key(*key)) {
            changes.push(Op::Delete {
                path: format!("{}/{key}", self.root),
                version: None,
            });
        }
        let mut batches = vec![vec![Op::Set {
            path: self.root.clone(),
            data: header,
            version: Some(self.fence),
        }]];
        let mut size = batches[0][0].size();
        for op in changes {
            if size + op.size() > BATCH_BYTES {
                batches.push(vec![Op::Check {
                    path: self.root.clone(),
                    version: self.fence.wrapping_add(1),
                }]);
                size = 0;
            }
            size += op.size();
            if let Some(batch) = batches.last_mut() {
                batch.push(op);
            }
        }
        Ok(Plan { batches, after })
    }

    /// Sends `plan`'s multis in order.
    pub async fn commit(session: Arc<dyn Session>, plan: &Plan) -> Result<(), ZkRegistryError> {
        for batch in &plan.batches {
            match session.multi(batch.clone()).await {
                Ok(()) => {}
                Err(ZkError::BadVersion | ZkError::NoNode) => return Err(ZkRegistryError::Deposed),
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Takes note that `plan` was committed.
    pub fn committed(&mut self, plan: Plan) {
        self.fence = self.fence.wrapping_add(1);
        self.written = plan.after;
    }
}

fn valid_bucket(name: &str) -> bool {
    name.len() == 4 && name.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_protocol::{AgentId, AgentInfo, FrameworkId, FrameworkInfo};
    use strata_zk::memory::Ensemble;

    fn agent(n: usize) -> RegisteredAgent {
        RegisteredAgent {
            info: std::sync::Arc::new(AgentInfo {
                id: Some(AgentId::new(format!("agent-{n}")).unwrap()),
                hostname: format!("host-{n}"),
                resources: "cpus:4;mem:1024".parse().unwrap(),
                attributes: Default::default(),
            }),
            pid: format!("agent@127.0.0.1:{}", 6000 + n).parse().unwrap(),
            certificate_name: format!("agent-{n}"),
            unreachable: false,
        }
    }

    fn registry(agents: usize, epoch: u64) -> Registry {
        let mut registry = Registry::empty();
        registry.epoch = epoch;
        registry.agents = (0..agents).map(|n| std::sync::Arc::new(agent(n))).collect();
        let mut framework = FrameworkInfo::new("f", "u");
        framework.id = Some(FrameworkId::new("fw-1").unwrap());
        registry.frameworks.push(framework);
        registry.removed_frameworks = vec![FrameworkId::new("fw-0").unwrap()];
        registry.gone_agents = (0..3)
            .map(|n| AgentId::new(format!("gone-{n}")).unwrap())
            .collect();
        registry.agents_admitted = agents as u64;
        registry.frameworks_created = 2;
        registry
    }

    fn sorted(mut registry: Registry) -> Registry {
        registry.agents.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        registry
    }

    #[tokio::test]
    async fn registries_round_trip_in_bounded_nodes_and_a_deposed_leader_cannot_write() {
        let ensemble = Ensemble::new();
        let timeout = std::time::Duration::from_secs(10);
        let first = ensemble.session(timeout);
        let (mut zk, found) = ZkRegistry::recover(first.as_ref(), "/strata")
            .await
            .unwrap();
        assert_eq!(found, None);
        // Enough agents for several multis.
        let mut written = registry(5_000, 1);
        let plan = zk.plan(&written).unwrap();
        assert!(plan.batches() > 1, "{} batches", plan.batches());
        ZkRegistry::commit(first.clone(), &plan).await.unwrap();
        zk.committed(plan);
        // One agent changed: one bucket is written, in one multi.
        std::sync::Arc::make_mut(&mut written.agents[7]).unreachable = true;
        written.gone_agents.remove(0);
        written.gone_agents.push(AgentId::new("gone-late").unwrap());
        let plan = zk.plan(&written).unwrap();
        assert_eq!(plan.batches(), 1);
        assert!(plan.batches[0].len() <= 4, "{:?}", plan.batches[0].len());
        ZkRegistry::commit(first.clone(), &plan).await.unwrap();
        zk.committed(plan);

        // Another master reads it back, order of gone agents included.
        let second = ensemble.session(timeout);
        let (mut successor, found) = ZkRegistry::recover(second.as_ref(), "/strata")
            .await
            .unwrap();
        assert_eq!(sorted(found.unwrap()), sorted(written.clone()));
        let mut next = written.clone();
        next.epoch = 2;
        let plan = successor.plan(&next).unwrap();
        ZkRegistry::commit(second.clone(), &plan).await.unwrap();
        successor.committed(plan);
        // The first master's next write fails: it was deposed.
        written.agents.pop();
        let plan = zk.plan(&written).unwrap();
        assert_eq!(
            ZkRegistry::commit(first.clone(), &plan).await,
            Err(ZkRegistryError::Deposed)
        );
        let (_, found) = ZkRegistry::recover(second.as_ref(), "/strata")
            .await
            .unwrap();
        assert_eq!(found.unwrap().epoch, 2);
        // A damaged bucket is an error naming it.
        second
            .multi(vec![Op::Set {
                path: "/strata/registry/agents/0000".into(),
                data: b"[".to_vec(),
                version: None,
            }])
            .await
            .ok();
        second
            .multi(vec![Op::Create {
                path: "/strata/registry/agents/0000".into(),
                data: b"[".to_vec(),
            }])
            .await
            .ok();
        let error = ZkRegistry::recover(second.as_ref(), "/strata")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("agents/0000"), "{error}");
        // An entry in another id's bucket (a copy, say) is refused too.
        let bucket = format!("/strata/registry/agents/{:04}", bucket_of("agent-7"));
        let (copy, _) = second.get(&bucket).await.unwrap().unwrap();
        second
            .multi(vec![Op::Set {
                path: "/strata/registry/agents/0000".into(),
                data: copy,
                version: None,
            }])
            .await
            .unwrap();
        let error = ZkRegistry::recover(second.as_ref(), "/strata")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("does not belong"), "{error}");
    }
}
