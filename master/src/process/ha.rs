//! A master among several, leading by ZooKeeper (`--zk`).
//!
//! The master contends in a task of its own ([`contend`]): it opens a
//! session, enters the contest ([`strata_zk::Leadership`]) and tells the
//! master where it stands. A standby serves nothing (its HTTP port
//! redirects to the leader, see [`redirecting`]). Once elected, the master
//! reads the registry from ZooKeeper, takes an epoch above every earlier
//! leader's, writes it back through the registry's fence and only then
//! acts, as a restarted master does.
//!
//! It acts only under a **lease**: the task confirms the session through
//! the ensemble's quorum every quarter of its timeout, and the master
//! sends nothing (messages and operator answers wait) unless its session
//! was confirmed alive less than half a timeout ago, since the ensemble
//! expires a session it has not heard from for a timeout and elects the
//! next master then. Registry writes need no lease: the registry's fence
//! refuses a deposed master's. So a
//! leader cut off from ZooKeeper, or stopped and resumed, stops acting
//! before its successor can lead. A leader whose session ended, or whose
//! registry write was fenced off, fails; its supervisor starts it again
//! as a standby with a new session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_runtime::http::{Request, Response};
use strata_zk::election::{Connect, Leadership, MasterInfo, Standing};
use strata_zk::{Session, SessionState, ZkError};
use tracing::{info, warn};

/// Where a master stands, for its HTTP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderView {
    /// Not known yet (not connected to ZooKeeper).
    Unknown,
    /// This master leads (or leads alone, without ZooKeeper).
    Leading,
    /// Another master leads (`None`: none does now).
    Following(Option<MasterInfo>),
}

/// How a master reaches ZooKeeper.
#[derive(Clone)]
pub struct HaConfig {
    /// The path masters contend under.
    pub base: String,
    /// Opens sessions.
    pub connect: Connect,
    /// The name the master gives in its `MasterInfo`.
    pub hostname: String,
    /// Where the master says where it stands, for [`redirecting`].
    pub view: tokio::sync::watch::Sender<LeaderView>,
    /// Every master contending now, leader first, for [`redirecting`]'s
    /// `/masters` (the web UI finds another master there when its own
    /// is gone).
    pub masters: tokio::sync::watch::Sender<Vec<MasterInfo>>,
    /// A simulation's master: the plan of a registry write is worked out
    /// at once rather than on tokio's blocking pool, whose threads end
    /// when they end, so that a run stays the same for its seed.
    pub simulated: bool,
}

impl std::fmt::Debug for HaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaConfig")
            .field("base", &self.base)
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// How a master among several is restarted: it steps down by failing
/// (its supervisor starts it again as a standby), which leadership
/// changes may ask of it often; only a master failing at every start,
/// about once a second for a minute, is given up.
pub fn restart_policy() -> strata_runtime::RestartPolicy {
    strata_runtime::RestartPolicy {
        max_restarts: 60,
        within: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
    }
}

/// What the contending task tells the master.
#[derive(Debug)]
pub(super) enum HaEvent {
    /// This master leads, in `session`.
    Elected(Arc<dyn Session>),
    /// Another master leads.
    Following(Option<MasterInfo>),
    /// The candidacy is over (session ended, or another master leads
    /// after this one did).
    Lost(String),
}

/// How the master's side of leadership stands.
#[derive(Debug)]
pub(super) struct Ha {
    pub(super) config: HaConfig,
    pub(super) stage: Stage,
    pub(super) session: Option<Arc<dyn Session>>,
    /// Until when the session is known alive (see the module's lease).
    lease: tokio::sync::watch::Receiver<Option<Instant>>,
    lease_sender: Option<tokio::sync::watch::Sender<Option<Instant>>>,
    /// Since when the master could not act, while leading.
    pub(super) blocked_since: Option<Instant>,
    /// The leader, while another master leads.
    leader: Option<MasterInfo>,
    /// Messages that arrived while this master, elected, was recovering
    /// the registry: handled once it leads (at most [`MAX_DEFERRED`]).
    deferred: Vec<Deferred>,
}

/// A message kept for when the master leads: who sent it, their
/// certificate's identity, and the message.
type Deferred = (
    strata_runtime::Upid,
    Arc<strata_runtime::tls::PeerIdentity>,
    strata_protocol::ToMaster,
);

/// The most messages an elected master keeps while it recovers; agents
/// and schedulers send again those beyond.
const MAX_DEFERRED: usize = 100_000;

/// Where a master stands in its own lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Waiting to be elected.
    Standby,
    /// Elected: reading and writing back the registry.
    Recovering,
    /// Acting as the leader.
    Leading,
}

impl Ha {
    pub(super) fn new(config: HaConfig) -> Ha {
        let (lease_sender, lease) = tokio::sync::watch::channel(None);
        Ha {
            config,
            stage: Stage::Standby,
            session: None,
            lease,
            lease_sender: Some(lease_sender),
            blocked_since: None,
            leader: None,
            deferred: Vec::new(),
        }
    }

    /// Whether the lease allows acting at `now`.
    pub(super) fn leased(&self, now: Instant) -> bool {
        self.stage == Stage::Leading && self.lease.borrow().is_some_and(|until| now < until)
    }

    /// Starts the contending task for the master at `pid`; its events
    /// arrive on the receiver.
    pub(super) fn start(
        &mut self,
        pid: &strata_runtime::Upid,
    ) -> tokio::sync::mpsc::Receiver<HaEvent> {
        let (events, receiver) = tokio::sync::mpsc::channel(16);
        // Unique to this candidacy (a restart contends anew).
        static CANDIDACIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let candidacy = CANDIDACIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let info = MasterInfo::new(
            &format!("{}-{}-{candidacy}", pid.addr(), pid.incarnation()),
            pid,
            &self.config.hostname,
        );
        let lease = self
            .lease_sender
            .take()
            .unwrap_or_else(|| tokio::sync::watch::channel(None).0);
        let (connect, base) = (self.config.connect.clone(), self.config.base.clone());
        let masters = self.config.masters.clone();
        tokio::spawn(async move {
            let lost = tokio::select! {
                lost = contend(connect, &base, &info, &events, &lease, &masters) => lost,
                () = events.closed() => return,
            };
            lease.send_replace(None);
            let _ = events.send(HaEvent::Lost(lost)).await;
        });
        receiver
    }
}

/// Contends until the candidacy is over (this master led and lost its
/// session, or another leads after it); why it is. A standby whose
/// session ends opens a new one and contends again.
async fn contend(
    connect: Connect,
    base: &str,
    info: &MasterInfo,
    events: &tokio::sync::mpsc::Sender<HaEvent>,
    lease: &tokio::sync::watch::Sender<Option<Instant>>,
    masters: &tokio::sync::watch::Sender<Vec<MasterInfo>>,
) -> String {
    loop {
        let session = strata_zk::election::open_session(&connect).await;
        match candidacy(session, base, info, events, lease, masters).await {
            Candidacy::Over(reason) => return reason,
            Candidacy::Again(reason) => {
                info!(%reason, "contending again in a new ZooKeeper session");
            }
        }
    }
}

/// How one session's candidacy ended.
enum Candidacy {
    /// For good: this master led.
    Over(String),
    /// The session ended before this master led: a new one may contend.
    Again(String),
}

/// Contends in `session` until it ends, or this master's leadership does.
async fn candidacy(
    session: Arc<dyn Session>,
    base: &str,
    info: &MasterInfo,
    events: &tokio::sync::mpsc::Sender<HaEvent>,
    lease: &tokio::sync::watch::Sender<Option<Instant>>,
    masters: &tokio::sync::watch::Sender<Vec<MasterInfo>>,
) -> Candidacy {
    let timeout = session.timeout();
    let mut state = session.state();
    // Not connected (no quorum): wait, in the same session.
    let leadership = loop {
        match Leadership::contend(session.clone(), base, info).await {
            Ok(leadership) => break leadership,
            Err(ZkError::ConnectionLoss) => {
                if wait_for_connection(&mut state, timeout).await == SessionState::Expired {
                    return Candidacy::Again("the ZooKeeper session expired".to_owned());
                }
            }
            Err(ZkError::SessionExpired) => {
                return Candidacy::Again("the ZooKeeper session expired".to_owned());
            }
            Err(cause) => return Candidacy::Over(format!("cannot contend in ZooKeeper: {cause}")),
        }
    };
    let node = format!("{base}/{}", leadership.node());
    let mut led = false;
    let ended = |led: bool, reason: &str| {
        if led {
            Candidacy::Over(reason.to_owned())
        } else {
            Candidacy::Again(reason.to_owned())
        }
    };
    loop {
        let (standing, changed) = match leadership.standing().await {
            Ok(found) => found,
            Err(ZkError::ConnectionLoss) => {
                lease.send_replace(None);
                match wait_for_connection(&mut state, timeout).await {
                    SessionState::Connected => continue,
                    // A leader unconnected for a whole timeout has surely
                    // lost its session; a standby waits on.
                    SessionState::Disconnected if !led => continue,
                    _ => return ended(led, "the ZooKeeper session ended"),
                }
            }
            Err(cause) => return ended(led, &format!("the ZooKeeper session ended: {cause}")),
        };
        if let Ok(found) = strata_zk::election::contenders(session.as_ref(), base).await {
            masters.send_if_modified(|known| {
                let changed = *known != found;
                *known = found;
                changed
            });
        }
        match standing {
            Standing::Leading if !led => {
                if !confirm(&session, &node, timeout, lease).await {
                    return Candidacy::Again("this master's node is gone".to_owned());
                }
                led = true;
                if events
                    .send(HaEvent::Elected(session.clone()))
                    .await
                    .is_err()
                {
                    return Candidacy::Over("the master is gone".to_owned());
                }
            }
            Standing::Leading => {}
            Standing::Following(_) if led => {
                return Candidacy::Over("another master leads".to_owned());
            }
            Standing::Following(leader) => {
                if events.send(HaEvent::Following(leader)).await.is_err() {
                    return Candidacy::Over("the master is gone".to_owned());
                }
            }
        }
        tokio::pin!(changed);
        loop {
            tokio::select! {
                () = &mut changed => break,
                moved = state.changed() => {
                    let now = *state.borrow();
                    if moved.is_err() || now == SessionState::Expired {
                        return ended(led, "the ZooKeeper session expired");
                    }
                    if now == SessionState::Disconnected {
                        // Not acting until the session is confirmed again.
                        lease.send_replace(None);
                        continue;
                    }
                }
                () = tokio::time::sleep(timeout / 4) => {}
            }
            if led && !confirm(&session, &node, timeout, lease).await {
                return Candidacy::Over("this master's node is gone from ZooKeeper".to_owned());
            }
        }
    }
}

/// Waits up to `timeout` for the session's state to change; the state
/// then.
async fn wait_for_connection(
    state: &mut tokio::sync::watch::Receiver<SessionState>,
    timeout: Duration,
) -> SessionState {
    match tokio::time::timeout(timeout, state.changed()).await {
        Ok(Err(_)) => SessionState::Expired,
        _ => *state.borrow(),
    }
}

/// Confirms the session alive through the ensemble's quorum (a check of
/// this master's node in a multi, which is a write: a server cut off from
/// the quorum cannot answer it, as it could a read); extends the lease to
/// half a timeout after it was sent. False when the node is gone (the
/// session is over).
async fn confirm(
    session: &Arc<dyn Session>,
    node: &str,
    timeout: Duration,
    lease: &tokio::sync::watch::Sender<Option<Instant>>,
) -> bool {
    let sent = tokio::time::Instant::now().into_std();
    let check = vec![strata_zk::Op::Check {
        path: node.to_owned(),
        version: 0,
    }];
    match session.multi(check).await {
        Ok(()) => {
            lease.send_replace(Some(sent + timeout / 2));
            true
        }
        Err(ZkError::NoNode | ZkError::SessionExpired | ZkError::BadVersion) => false,
        // Not confirmed now; the lease runs out on its own.
        Err(_) => true,
    }
}

/// The HTTP routes of a master that may not lead: while another master
/// leads, every request but `/health` and `/version` is answered 307 to
/// the same path on the leader (a protocol-relative `Location`, as
/// Apache Mesos answers); while none does, 503.
pub fn redirecting(
    view: tokio::sync::watch::Receiver<LeaderView>,
    masters: tokio::sync::watch::Receiver<Vec<MasterInfo>>,
    rest: impl Fn(&Request) -> Response + Send + Sync + 'static,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    move |request: &Request| {
        if matches!(request.path.as_str(), "/health" | "/version") {
            return rest(request);
        }
        let view = view.borrow().clone();
        if request.path == "/masters" {
            return masters_answer(&view, &masters.borrow());
        }
        // The web UI itself, while no master leads: it waits for one.
        if matches!(request.path.as_str(), "/" | "/index.html")
            && matches!(view, LeaderView::Following(None) | LeaderView::Unknown)
        {
            return rest(request);
        }
        match view {
            LeaderView::Leading => rest(request),
            LeaderView::Following(Some(leader)) => match leader.http_address() {
                Some(address) => {
                    let path: String = request
                        .path
                        .split('/')
                        .map(encode)
                        .collect::<Vec<_>>()
                        .join("/");
                    let mut location = format!("//{address}{path}");
                    if !request.query.is_empty() {
                        let query: Vec<String> = request
                            .query
                            .iter()
                            .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
                            .collect();
                        location.push('?');
                        location.push_str(&query.join("&"));
                    }
                    let mut response = Response::error(
                        307,
                        &format!("this master does not lead; {} does", leader.pid),
                    );
                    response.headers.push(("Location", location));
                    response
                }
                None => Response::error(503, "no master leads now"),
            },
            LeaderView::Following(None) | LeaderView::Unknown => {
                Response::error(503, "no master leads now")
            }
        }
    }
}

/// `/masters`: every master contending (`host:port` of its HTTP API,
/// leader first) and the leader, as this master knows them; empty for a
/// master leading alone.
fn masters_answer(view: &LeaderView, masters: &[MasterInfo]) -> Response {
    let leader = match view {
        LeaderView::Following(Some(leader)) => leader.http_address(),
        LeaderView::Leading => masters.first().and_then(MasterInfo::http_address),
        _ => None,
    };
    let body = serde_json::json!({
        "leader": leader.map(|address| address.to_string()),
        "masters": masters
            .iter()
            .filter_map(MasterInfo::http_address)
            .map(|address| address.to_string())
            .collect::<Vec<_>>(),
    });
    Response::json(body.to_string())
}

/// Percent-encodes what is not unreserved in a query component.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Logs where the master stands, once per change.
pub(super) fn announce(view: &tokio::sync::watch::Sender<LeaderView>, now: LeaderView) {
    view.send_if_modified(|known| {
        if *known == now {
            return false;
        }
        match &now {
            LeaderView::Leading => info!("this master leads"),
            LeaderView::Following(Some(leader)) => {
                info!(leader = %leader.pid, "another master leads")
            }
            LeaderView::Following(None) => info!("no master leads now"),
            LeaderView::Unknown => {}
        }
        *known = now;
        true
    });
}

impl super::Master {
    /// Takes the contending task's next event, then waits for more.
    pub(super) fn take_ha_events(
        &mut self,
        ctx: &mut strata_runtime::ProcessContext<'_, Self>,
        mut events: tokio::sync::mpsc::Receiver<HaEvent>,
    ) {
        ctx.spawn_future(
            async move { (events.recv().await, events) },
            |master, ctx, (event, events)| {
                let Some(event) = event else {
                    return ctx.fail("the ZooKeeper contender stopped");
                };
                master.ha_event(ctx, event);
                master.take_ha_events(ctx, events);
            },
        );
    }

    fn ha_event(&mut self, ctx: &mut strata_runtime::ProcessContext<'_, Self>, event: HaEvent) {
        let Some(ha) = &mut self.ha else {
            return;
        };
        match event {
            HaEvent::Following(leader) => {
                if ha.stage == Stage::Standby {
                    ha.leader.clone_from(&leader);
                    announce(&ha.config.view, LeaderView::Following(leader));
                }
            }
            HaEvent::Lost(reason) => {
                warn!(%reason, "leadership contest over; starting again as a standby");
                announce(&ha.config.view, LeaderView::Unknown);
                ctx.fail(format!("left the leadership contest: {reason}"));
            }
            HaEvent::Elected(session) => {
                info!("elected; recovering the registry from ZooKeeper");
                ha.stage = Stage::Recovering;
                ha.leader = None;
                // Not the old leader's any more, not serving yet.
                announce(&ha.config.view, LeaderView::Unknown);
                ha.session = Some(session.clone());
                let base = ha.config.base.clone();
                ctx.spawn_future(
                    async move {
                        crate::zk_registry::ZkRegistry::recover(session.as_ref(), &base).await
                    },
                    |master, ctx, recovered| match recovered {
                        Ok((zk, previous)) => master.take_over(ctx, zk, previous),
                        Err(cause) => {
                            tracing::error!(%cause, "cannot read the registry from ZooKeeper");
                            ctx.fail(format!("cannot read the registry from ZooKeeper: {cause}"));
                        }
                    },
                );
            }
        }
    }

    /// Elected, with the registry read: takes the next epoch, writes it
    /// back through the fence (its plan worked out on tokio's blocking
    /// pool, as every write's), then leads.
    fn take_over(
        &mut self,
        ctx: &mut strata_runtime::ProcessContext<'_, Self>,
        zk: crate::zk_registry::ZkRegistry,
        previous: Option<crate::registry::Registry>,
    ) {
        self.take_back(previous);
        let Some((session, simulated)) = self
            .ha
            .as_ref()
            .and_then(|ha| Some((ha.session.clone()?, ha.config.simulated)))
        else {
            return ctx.fail("elected without a ZooKeeper session");
        };
        let registry = self.books.registry();
        ctx.spawn_future(
            super::ZkWrite::plan_and_commit(zk, registry, session, simulated),
            |master, ctx, written| {
                let (mut zk, plan) = match written {
                    super::ZkWrite::Committed(zk, plan, Ok(())) => (zk, plan),
                    super::ZkWrite::Committed(_, _, Err(cause)) => {
                        tracing::error!(%cause, "cannot write the registry to ZooKeeper");
                        return ctx
                            .fail(format!("cannot write the registry to ZooKeeper: {cause}"));
                    }
                    super::ZkWrite::NotPlanned(_, cause) => {
                        tracing::error!(%cause, "cannot write the registry");
                        return ctx.fail(format!("cannot write the registry: {cause}"));
                    }
                    super::ZkWrite::Lost => {
                        tracing::error!("the thread planning the registry's write failed");
                        return ctx.fail("the thread planning the registry's write failed");
                    }
                };
                zk.committed(plan);
                master.put_back(zk);
                let changes = master.books.registry_changes();
                if let Some(file) = &mut master.registry {
                    file.written = changes;
                }
                let Some(ha) = &mut master.ha else {
                    return;
                };
                ha.stage = Stage::Leading;
                announce(&ha.config.view, LeaderView::Leading);
                let deferred = std::mem::take(&mut ha.deferred);
                info!(
                    epoch = master.books.master_epoch(),
                    deferred = deferred.len(),
                    "leading"
                );
                for (from, sender, message) in deferred {
                    master.apply(
                        ctx,
                        crate::books::Input::Received {
                            from,
                            sender,
                            message,
                        },
                    );
                }
                master.changed = true;
                master.publish(ctx);
            },
        );
    }

    /// A message to a master that does not lead: kept for later if it was
    /// elected and is recovering; otherwise registrations and
    /// subscriptions are answered with the leader's address (when one is
    /// known), the rest dropped; agents and schedulers that follow
    /// ZooKeeper find the leader there anyway.
    pub(super) fn not_leading(
        &mut self,
        ctx: &mut strata_runtime::ProcessContext<'_, Self>,
        from: strata_runtime::Upid,
        message: strata_protocol::ToMaster,
    ) {
        use strata_protocol::{ToAgent, ToMaster, ToScheduler};
        if let Some(ha) = &mut self.ha
            && ha.stage == Stage::Recovering
        {
            // Elected: what arrives is handled once the registry is back
            // (agents re-registering as the leader changes, mostly).
            if ha.deferred.len() < MAX_DEFERRED {
                ha.deferred.push((from, ctx.sender(), message));
            }
            return;
        }
        let leader = self
            .ha
            .as_ref()
            .and_then(|ha| ha.leader.as_ref())
            .map(|info| info.pid.clone());
        match message {
            ToMaster::RegisterAgent { .. } | ToMaster::ReregisterAgent { .. } => {
                super::send(ctx, &from, ToAgent::NotLeader { leader });
            }
            ToMaster::Subscribe { .. } => {
                super::send(ctx, &from, ToScheduler::NotLeader { leader });
            }
            other => tracing::debug!(
                from = %from,
                kind = strata_runtime::Message::kind(&other),
                "message to a master that does not lead dropped"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_redirects_to_the_leader_and_serves_its_health() {
        let (view, watching) = tokio::sync::watch::channel(LeaderView::Unknown);
        let (masters, known) = tokio::sync::watch::channel(Vec::new());
        let routes = redirecting(watching, known, |_: &Request| {
            Response::text("text/plain", "here")
        });
        let get = |path: &str, query: Vec<(String, String)>| {
            routes(&Request {
                method: "GET".into(),
                path: path.into(),
                query,
                ..Request::default()
            })
        };
        assert_eq!(get("/state", vec![]).status, 503);
        assert_eq!(get("/health", vec![]).status, 200);
        // The web UI waits for a leader on any master.
        assert_eq!(get("/", vec![]).status, 200);
        let pid = "master@10.0.0.2:5050".parse().unwrap();
        let other = "master@10.0.0.3:5050".parse().unwrap();
        masters.send_replace(vec![
            MasterInfo::new("m", &pid, "h"),
            MasterInfo::new("o", &other, "h"),
        ]);
        view.send_replace(LeaderView::Following(Some(MasterInfo::new("m", &pid, "h"))));
        let listed: serde_json::Value =
            serde_json::from_slice(&get("/masters", vec![]).body).unwrap();
        assert_eq!(listed["leader"], "10.0.0.2:5050");
        assert_eq!(listed["masters"][1], "10.0.0.3:5050");
        assert_eq!(get("/", vec![]).status, 307);
        assert_eq!(
            get("/files/a b", vec![]).headers,
            vec![("Location", "//10.0.0.2:5050/files/a%20b".to_owned())]
        );
        let answer = get("/state", vec![("jsonp".into(), "a b&c".into())]);
        assert_eq!(answer.status, 307);
        assert_eq!(
            answer.headers,
            vec![(
                "Location",
                "//10.0.0.2:5050/state?jsonp=a%20b%26c".to_owned()
            )]
        );
        view.send_replace(LeaderView::Leading);
        assert_eq!(get("/state", vec![]).status, 200);
    }
}
