//! A [`Session`] on a real ZooKeeper ensemble, through the
//! `zookeeper-client` crate.

use std::sync::Arc;
use std::time::Duration;

use zookeeper_client as zk;

use crate::{Changed, CreateMode, Op, Session, SessionState, ZkError, ZkFuture, ZkUrl};

/// Opens a session with the ensemble `url` names, asking for `timeout`;
/// waits about that long for a server before it gives up.
pub async fn connect(url: &ZkUrl, timeout: Duration) -> Result<Arc<dyn Session>, ZkError> {
    let client = zk::Client::connector()
        .with_session_timeout(timeout)
        .with_connection_timeout(timeout.min(Duration::from_secs(5)))
        .connect(&url.connect_string())
        .await
        .map_err(error)?;
    let timeout = client.session_timeout();
    let (sender, state) = tokio::sync::watch::channel(SessionState::Connected);
    let mut watcher = client.state_watcher();
    tokio::spawn(async move {
        loop {
            let state = match watcher.changed().await {
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                    SessionState::Connected
                }
                zk::SessionState::Disconnected => SessionState::Disconnected,
                zk::SessionState::Expired
                | zk::SessionState::Closed
                | zk::SessionState::AuthFailed => SessionState::Expired,
            };
            let over = state == SessionState::Expired;
            if sender.send(state).is_err() || over {
                return;
            }
        }
    });
    Ok(Arc::new(RealSession {
        client,
        state,
        timeout,
    }))
}

struct RealSession {
    client: zk::Client,
    state: tokio::sync::watch::Receiver<SessionState>,
    timeout: Duration,
}

impl std::fmt::Debug for RealSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealSession")
            .field("session", &self.client.session_id())
            .finish_non_exhaustive()
    }
}

/// What Strata makes of the client's errors.
fn error(error: zk::Error) -> ZkError {
    match error {
        zk::Error::NoNode => ZkError::NoNode,
        zk::Error::NodeExists => ZkError::NodeExists,
        zk::Error::BadVersion => ZkError::BadVersion,
        zk::Error::NotEmpty => ZkError::NotEmpty,
        zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed => {
            ZkError::SessionExpired
        }
        zk::Error::ConnectionLoss | zk::Error::Timeout | zk::Error::NoHosts => {
            ZkError::ConnectionLoss
        }
        other => ZkError::Other(other.to_string()),
    }
}

const OPEN: zk::CreateOptions<'static> =
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
const EPHEMERAL_SEQUENTIAL: zk::CreateOptions<'static> =
    zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());

impl Session for RealSession {
    fn create(&self, path: &str, data: Vec<u8>, mode: CreateMode) -> ZkFuture<String> {
        let client = self.client.clone();
        let path = path.to_owned();
        Box::pin(async move {
            let options = match mode {
                CreateMode::Persistent => &OPEN,
                CreateMode::EphemeralSequential => &EPHEMERAL_SEQUENTIAL,
            };
            let (_, sequence) = client.create(&path, &data, options).await.map_err(error)?;
            Ok(match mode {
                CreateMode::Persistent => path,
                CreateMode::EphemeralSequential => format!("{path}{sequence}"),
            })
        })
    }

    fn get(&self, path: &str) -> ZkFuture<Option<(Vec<u8>, i32)>> {
        // Sent now, not when first polled: many reads go out together.
        let read = self.client.get_data(path);
        Box::pin(async move {
            match read.await {
                Ok((data, stat)) => Ok(Some((data, stat.version))),
                Err(zk::Error::NoNode) => Ok(None),
                Err(other) => Err(error(other)),
            }
        })
    }

    fn children(&self, path: &str) -> ZkFuture<Vec<String>> {
        let client = self.client.clone();
        let path = path.to_owned();
        Box::pin(async move { client.list_children(&path).await.map_err(error) })
    }

    fn watch_children(&self, path: &str) -> ZkFuture<(Vec<String>, Changed)> {
        let client = self.client.clone();
        let path = path.to_owned();
        Box::pin(async move {
            let (children, watcher) = client.list_and_watch_children(&path).await.map_err(error)?;
            let changed: Changed = Box::pin(async move {
                watcher.changed().await;
            });
            Ok((children, changed))
        })
    }

    fn multi(&self, ops: Vec<Op>) -> ZkFuture<()> {
        let client = self.client.clone();
        Box::pin(async move {
            let mut writer = client.new_multi_writer();
            for op in &ops {
                let added = match op {
                    Op::Check { path, version } => writer.add_check_version(path, *version),
                    Op::Create { path, data } => writer.add_create(path, data, &OPEN),
                    Op::Set {
                        path,
                        data,
                        version,
                    } => writer.add_set_data(path, data, *version),
                    Op::Delete { path, version } => writer.add_delete(path, *version),
                };
                added.map_err(error)?;
            }
            writer
                .commit()
                .await
                .map(drop)
                .map_err(|failure| error(failure.into()))
        })
    }

    fn state(&self) -> tokio::sync::watch::Receiver<SessionState> {
        self.state.clone()
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}
