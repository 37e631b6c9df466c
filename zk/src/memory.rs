//! An in-memory ZooKeeper ensemble: sessions, persistent and ephemeral
//! sequential nodes, versions, child watches, all-or-nothing multis,
//! disconnections, expiry and a lost quorum, driven by whoever holds the
//! [`Ensemble`] (a test, or the simulation with its clock). What a real
//! ensemble does on its own, expiring a session it has not heard from for
//! its timeout, happens when the holder calls [`Ensemble::expire_overdue`]
//! (for sessions cut off by [`Ensemble::partition`], on tokio's clock) or
//! [`Ensemble::expire`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::{Changed, CreateMode, Op, Session, SessionState, ZkError, ZkFuture};

/// A session's number in an [`Ensemble`].
pub type SessionId = u64;

/// The ensemble; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Ensemble {
    tree: Arc<Mutex<Tree>>,
}

#[derive(Debug, Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    sessions: BTreeMap<SessionId, Client>,
    next_session: SessionId,
    /// Whether a quorum serves (no operation succeeds without one).
    quorum_lost: bool,
    /// Child watches: the parent watched, and whom to tell.
    watches: Vec<(String, SessionId, tokio::sync::oneshot::Sender<()>)>,
}

#[derive(Debug, Default, Clone)]
struct Node {
    data: Vec<u8>,
    version: i32,
    owner: Option<SessionId>,
    /// The next sequence number of a sequential child.
    next_sequence: i64,
}

#[derive(Debug)]
struct Client {
    state: tokio::sync::watch::Sender<SessionState>,
    /// Cut off from the ensemble (a partition of this client alone).
    partitioned: bool,
    /// Since when the ensemble has not heard from it (while a quorum
    /// serves).
    unheard_since: Option<tokio::time::Instant>,
    timeout: Duration,
    /// Expired while out of touch: it does not know yet.
    expired: bool,
}

impl Ensemble {
    pub fn new() -> Ensemble {
        Ensemble::default()
    }

    fn tree(&self) -> MutexGuard<'_, Tree> {
        // A panic while holding the lock leaves the tree as it was before
        // the operation (every operation checks before it changes).
        self.tree
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new session, connected unless the quorum is lost.
    pub fn session(&self, timeout: Duration) -> Arc<MemorySession> {
        let mut tree = self.tree();
        tree.next_session += 1;
        let id = tree.next_session;
        let initial = if tree.quorum_lost {
            SessionState::Disconnected
        } else {
            SessionState::Connected
        };
        let (state, _) = tokio::sync::watch::channel(initial);
        tree.sessions.insert(
            id,
            Client {
                state,
                partitioned: false,
                unheard_since: None,
                timeout,
                expired: false,
            },
        );
        Arc::new(MemorySession {
            ensemble: self.clone(),
            id,
            timeout,
        })
    }

    /// Ends session `id`: its ephemeral nodes go, others' watches fire.
    /// Its client learns of it (state expired, watches fired) only once it
    /// reaches the ensemble: at once, or when a partition cutting it off
    /// heals.
    pub fn expire(&self, id: SessionId) {
        let mut tree = self.tree();
        let quorum_lost = tree.quorum_lost;
        let Some(client) = tree.sessions.get_mut(&id) else {
            return;
        };
        if client.expired {
            return;
        }
        client.expired = true;
        if !client.partitioned && !quorum_lost {
            tree.tell_expired(id);
        }
        let owned: Vec<String> = tree
            .nodes
            .iter()
            .filter(|(_, node)| node.owner == Some(id))
            .map(|(path, _)| path.clone())
            .collect();
        for path in owned {
            tree.nodes.remove(&path);
            tree.fire(&path);
        }
    }

    /// Cuts session `id` off from the ensemble (`true`) or lets it reach
    /// it again; it is disconnected meanwhile, and alive until expired.
    pub fn partition(&self, id: SessionId, cut: bool) {
        let mut tree = self.tree();
        let quorum_lost = tree.quorum_lost;
        let Some(client) = tree.sessions.get_mut(&id) else {
            return;
        };
        if client.expired {
            client.partitioned = cut;
            if !cut && !quorum_lost {
                // Back in touch: it learns its session is over.
                tree.tell_expired(id);
            }
            return;
        }
        client.partitioned = cut;
        client.unheard_since = cut.then(tokio::time::Instant::now);
        client.state.send_replace(if cut || quorum_lost {
            SessionState::Disconnected
        } else {
            SessionState::Connected
        });
        if !cut && !quorum_lost {
            tree.fire_session(id);
        }
    }

    /// Loses the quorum (`true`: every session disconnected, every
    /// operation fails) or regains it (sessions alive reconnect).
    pub fn lose_quorum(&self, lost: bool) {
        let mut tree = self.tree();
        tree.quorum_lost = lost;
        if !lost {
            let learning: Vec<SessionId> = tree
                .sessions
                .iter()
                .filter(|(_, client)| client.expired && !client.partitioned)
                .map(|(id, _)| *id)
                .collect();
            for id in learning {
                tree.tell_expired(id);
            }
        }
        for client in tree.sessions.values_mut() {
            // A new quorum gives every session a fresh timeout.
            if !lost && client.partitioned {
                client.unheard_since = Some(tokio::time::Instant::now());
            }
            client.state.send_replace(if lost || client.partitioned {
                SessionState::Disconnected
            } else {
                SessionState::Connected
            });
        }
        if !lost {
            let hearing: Vec<SessionId> = tree
                .sessions
                .iter()
                .filter(|(_, client)| !client.partitioned)
                .map(|(id, _)| *id)
                .collect();
            for id in hearing {
                tree.fire_session(id);
            }
        }
    }

    /// Expires the sessions cut off for at least their timeout (while a
    /// quorum serves: without one, nothing expires), as an ensemble does;
    /// the ids expired.
    pub fn expire_overdue(&self) -> Vec<SessionId> {
        let overdue: Vec<SessionId> = {
            let tree = self.tree();
            if tree.quorum_lost {
                return Vec::new();
            }
            let now = tokio::time::Instant::now();
            tree.sessions
                .iter()
                .filter(|(_, client)| {
                    !client.expired
                        && client
                            .unheard_since
                            .is_some_and(|since| now.duration_since(since) >= client.timeout)
                })
                .map(|(id, _)| *id)
                .collect()
        };
        let mut overdue = overdue;
        overdue.sort_unstable();
        for id in &overdue {
            self.expire(*id);
        }
        overdue
    }

    /// The sessions alive, and whether each is connected.
    pub fn sessions(&self) -> Vec<(SessionId, bool)> {
        let tree = self.tree();
        let mut sessions: Vec<_> = tree
            .sessions
            .iter()
            .filter(|(_, client)| !client.expired)
            .map(|(id, client)| (*id, !client.partitioned && !tree.quorum_lost))
            .collect();
        sessions.sort_unstable();
        sessions
    }

    /// A node's data, read from outside any session (tests).
    pub fn data(&self, path: &str) -> Option<Vec<u8>> {
        self.tree().nodes.get(path).map(|node| node.data.clone())
    }
}

impl Tree {
    /// Checks that session `id` may operate now.
    fn reachable(&self, id: SessionId) -> Result<(), ZkError> {
        match self.sessions.get(&id) {
            None => Err(ZkError::SessionExpired),
            Some(client) if client.partitioned || self.quorum_lost => Err(ZkError::ConnectionLoss),
            Some(client) if client.expired => Err(ZkError::SessionExpired),
            Some(_) => Ok(()),
        }
    }

    /// Whether session `id` hears from the ensemble now.
    fn hears(&self, id: SessionId) -> bool {
        !self.quorum_lost
            && self
                .sessions
                .get(&id)
                .is_some_and(|client| !client.partitioned)
    }

    /// Session `id`, expired, learns it: its state, and its watches fire.
    fn tell_expired(&mut self, id: SessionId) {
        if let Some(client) = self.sessions.remove(&id) {
            client.state.send_replace(SessionState::Expired);
        }
        self.fire_session(id);
    }

    /// Fires every watch of session `id` (after it was out of touch, it
    /// looks again at what it watched).
    fn fire_session(&mut self, id: SessionId) {
        let mut kept = Vec::new();
        for (path, watcher, tell) in std::mem::take(&mut self.watches) {
            if watcher == id {
                let _ = tell.send(());
            } else {
                kept.push((path, watcher, tell));
            }
        }
        self.watches = kept;
    }

    /// Tells the watchers of `path`'s parent (and of `path`) it changed;
    /// those out of touch hear of it when they are back.
    fn fire(&mut self, path: &str) {
        let parent = parent_of(path);
        let mut kept = Vec::new();
        for (watched, watcher, tell) in std::mem::take(&mut self.watches) {
            if (watched == parent || watched == path) && self.hears(watcher) {
                let _ = tell.send(());
            } else {
                kept.push((watched, watcher, tell));
            }
        }
        self.watches = kept;
    }

    fn create(
        &mut self,
        session: SessionId,
        path: &str,
        data: Vec<u8>,
        mode: CreateMode,
    ) -> Result<String, ZkError> {
        if !valid_path(path) {
            return Err(ZkError::Other(format!("invalid path {path:?}")));
        }
        let parent = parent_of(path).to_owned();
        if parent != "/" {
            match self.nodes.get(&parent) {
                None => return Err(ZkError::NoNode),
                Some(node) if node.owner.is_some() => {
                    return Err(ZkError::Other("ephemeral nodes have no children".into()));
                }
                Some(_) => {}
            }
        }
        let (path, owner) = match mode {
            CreateMode::Persistent => (path.to_owned(), None),
            CreateMode::EphemeralSequential => {
                let sequence = match self.nodes.get_mut(&parent) {
                    Some(node) => {
                        node.next_sequence += 1;
                        node.next_sequence - 1
                    }
                    None => 0,
                };
                (format!("{path}{sequence:010}"), Some(session))
            }
        };
        if self.nodes.contains_key(&path) {
            return Err(ZkError::NodeExists);
        }
        self.nodes.insert(
            path.clone(),
            Node {
                data,
                owner,
                ..Node::default()
            },
        );
        self.fire(&path);
        Ok(path)
    }

    fn children(&self, path: &str) -> Result<Vec<String>, ZkError> {
        if path != "/" && !self.nodes.contains_key(path) {
            return Err(ZkError::NoNode);
        }
        let prefix = if path == "/" {
            "/".to_owned()
        } else {
            format!("{path}/")
        };
        Ok(self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(child, _)| child.starts_with(&prefix))
            .filter_map(|(child, _)| {
                let name = &child[prefix.len()..];
                (!name.contains('/')).then(|| name.to_owned())
            })
            .collect())
    }

    /// Checks one operation of a multi against the tree as it would be.
    fn check(&self, op: &Op) -> Result<(), ZkError> {
        let version_of = |path: &str| self.nodes.get(path).map(|node| node.version);
        match op {
            Op::Check { path, version } => match version_of(path) {
                None => Err(ZkError::NoNode),
                Some(found) if found != *version => Err(ZkError::BadVersion),
                Some(_) => Ok(()),
            },
            Op::Create { path, .. } => {
                if self.nodes.contains_key(path) {
                    Err(ZkError::NodeExists)
                } else if parent_of(path) != "/" && !self.nodes.contains_key(parent_of(path)) {
                    Err(ZkError::NoNode)
                } else {
                    Ok(())
                }
            }
            Op::Set { path, version, .. } => match version_of(path) {
                None => Err(ZkError::NoNode),
                Some(found) if version.is_some_and(|expected| expected != found) => {
                    Err(ZkError::BadVersion)
                }
                Some(_) => Ok(()),
            },
            Op::Delete { path, version } => match version_of(path) {
                None => Err(ZkError::NoNode),
                Some(found) if version.is_some_and(|expected| expected != found) => {
                    Err(ZkError::BadVersion)
                }
                Some(_) if !self.children(path)?.is_empty() => Err(ZkError::NotEmpty),
                Some(_) => Ok(()),
            },
        }
    }

    fn apply(&mut self, session: SessionId, op: Op) -> Result<(), ZkError> {
        self.check(&op)?;
        match op {
            Op::Check { .. } => {}
            Op::Create { path, data } => {
                self.create(session, &path, data, CreateMode::Persistent)?;
            }
            Op::Set { path, data, .. } => {
                if let Some(node) = self.nodes.get_mut(&path) {
                    node.data = data;
                    node.version += 1;
                }
            }
            Op::Delete { path, .. } => {
                self.nodes.remove(&path);
                self.fire(&path);
            }
        }
        Ok(())
    }
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(at) => &path[..at],
    }
}

fn valid_path(path: &str) -> bool {
    path.starts_with('/') && path.len() > 1 && !path.ends_with('/') && !path.contains("//")
}

/// A session of an [`Ensemble`].
#[derive(Debug)]
pub struct MemorySession {
    ensemble: Ensemble,
    id: SessionId,
    timeout: Duration,
}

impl MemorySession {
    /// Its number, for [`Ensemble::expire`] and [`Ensemble::partition`].
    pub fn id(&self) -> SessionId {
        self.id
    }

    fn run<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut Tree, SessionId) -> Result<T, ZkError>,
    ) -> ZkFuture<T> {
        let mut tree = self.ensemble.tree();
        let result = tree
            .reachable(self.id)
            .and_then(|()| operation(&mut tree, self.id));
        Box::pin(std::future::ready(result))
    }
}

/// Dropping a session closes it, as the real client does: its ephemeral
/// nodes go at once. A session that cannot reach a quorum cannot close;
/// it is heard from no more and expires after its timeout.
impl Drop for MemorySession {
    fn drop(&mut self) {
        let reachable = self.ensemble.tree().reachable(self.id).is_ok();
        if reachable {
            self.ensemble.expire(self.id);
            return;
        }
        let mut tree = self.ensemble.tree();
        if let Some(client) = tree.sessions.get_mut(&self.id) {
            client.partitioned = true;
            client
                .unheard_since
                .get_or_insert_with(tokio::time::Instant::now);
        }
    }
}

impl Session for MemorySession {
    fn create(&self, path: &str, data: Vec<u8>, mode: CreateMode) -> ZkFuture<String> {
        self.run(|tree, id| tree.create(id, path, data, mode))
    }

    fn get(&self, path: &str) -> ZkFuture<Option<(Vec<u8>, i32)>> {
        self.run(|tree, _| {
            Ok(tree
                .nodes
                .get(path)
                .map(|node| (node.data.clone(), node.version)))
        })
    }

    fn children(&self, path: &str) -> ZkFuture<Vec<String>> {
        self.run(|tree, _| tree.children(path))
    }

    fn watch_children(&self, path: &str) -> ZkFuture<(Vec<String>, Changed)> {
        self.run(|tree, id| {
            let children = tree.children(path)?;
            let (tell, told) = tokio::sync::oneshot::channel();
            tree.watches.push((path.to_owned(), id, tell));
            let changed: Changed = Box::pin(async move {
                let _ = told.await;
            });
            Ok((children, changed))
        })
    }

    fn multi(&self, ops: Vec<Op>) -> ZkFuture<()> {
        self.run(|tree, id| {
            // All or nothing: try on a copy, keep it if every one passed.
            let nodes = tree.nodes.clone();
            let watches = tree.watches.len();
            for op in ops {
                if let Err(error) = tree.apply(id, op) {
                    tree.nodes = nodes;
                    debug_assert!(tree.watches.len() <= watches);
                    return Err(error);
                }
            }
            Ok(())
        })
    }

    fn state(&self) -> tokio::sync::watch::Receiver<SessionState> {
        let tree = self.ensemble.tree();
        match tree.sessions.get(&self.id) {
            Some(client) => client.state.subscribe(),
            None => tokio::sync::watch::channel(SessionState::Expired).1,
        }
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(future: ZkFuture<T>) -> Result<T, ZkError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(future)
    }

    #[test]
    fn nodes_versions_multis_and_sessions_behave_as_zookeepers_do() {
        let ensemble = Ensemble::new();
        let one = ensemble.session(Duration::from_secs(10));
        let two = ensemble.session(Duration::from_secs(10));
        block(one.create("/a", b"x".to_vec(), CreateMode::Persistent)).unwrap();
        assert_eq!(
            block(one.create("/a/b/c", vec![], CreateMode::Persistent)),
            Err(ZkError::NoNode)
        );
        let first = block(one.create("/a/n_", vec![], CreateMode::EphemeralSequential)).unwrap();
        let second = block(two.create("/a/n_", vec![], CreateMode::EphemeralSequential)).unwrap();
        assert_eq!(
            (first.as_str(), second.as_str()),
            ("/a/n_0000000000", "/a/n_0000000001")
        );
        // A multi that fails on its last op changes nothing.
        let failed = block(one.multi(vec![
            Op::Set {
                path: "/a".into(),
                data: b"y".to_vec(),
                version: Some(0),
            },
            Op::Check {
                path: "/a".into(),
                version: 0,
            },
        ]));
        assert_eq!(failed, Err(ZkError::BadVersion));
        assert_eq!(block(one.get("/a")).unwrap(), Some((b"x".to_vec(), 0)));
        let (children, changed) = block(two.watch_children("/a")).unwrap();
        assert_eq!(children, ["n_0000000000", "n_0000000001"]);
        // Partitioned: no operations, the session lives on.
        ensemble.partition(one.id(), true);
        assert_eq!(block(one.get("/a")), Err(ZkError::ConnectionLoss));
        assert_eq!(*one.state().borrow(), SessionState::Disconnected);
        ensemble.partition(one.id(), false);
        assert_eq!(block(one.get("/a")).unwrap().map(|(_, v)| v), Some(0));
        ensemble.expire(one.id());
        assert_eq!(block(one.get("/a")), Err(ZkError::SessionExpired));
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(changed);
        assert_eq!(block(two.children("/a")).unwrap(), ["n_0000000001"]);
        ensemble.lose_quorum(true);
        assert_eq!(block(two.children("/a")), Err(ZkError::ConnectionLoss));
        assert!(
            ensemble.expire_overdue().is_empty(),
            "nothing expires without a quorum"
        );
        ensemble.lose_quorum(false);
        assert_eq!(
            block(two.multi(vec![Op::Delete {
                path: "/a".into(),
                version: None
            }])),
            Err(ZkError::NotEmpty)
        );
    }
}

#[cfg(test)]
mod expiry {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_session_cut_off_for_its_timeout_expires_unless_the_quorum_is_lost() {
        let ensemble = Ensemble::new();
        let cut = ensemble.session(Duration::from_secs(10));
        let kept = ensemble.session(Duration::from_secs(10));
        ensemble.partition(cut.id(), true);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(ensemble.expire_overdue().is_empty());
        ensemble.lose_quorum(true);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(ensemble.expire_overdue().is_empty());
        // A new quorum: a fresh timeout from now.
        ensemble.lose_quorum(false);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(ensemble.expire_overdue().is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(ensemble.expire_overdue(), vec![cut.id()]);
        assert_eq!(ensemble.sessions(), vec![(kept.id(), true)]);
    }
}
