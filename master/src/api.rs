//! The v1 scheduler API on the master's HTTP port: frameworks in any
//! language POST JSON calls to `/api/v1/scheduler` and read their events
//! from the RecordIO stream their SUBSCRIBE opened.
//!
//! An HTTP framework is an ordinary framework in the books. Each
//! subscription gets a process id of its own on the master's node
//! (`scheduler-http-N`), under which its calls enter the books as an
//! actor framework's messages would; what the books send to that id is
//! written to the subscription's stream as events instead of going over
//! the network. A stream whose client is gone, or that has
//! [`EVENT_BUFFER`] events or [`EVENT_BYTES`] bytes unread, is closed,
//! and its framework is disconnected as an actor framework whose link
//! broke (it may subscribe again within its failover timeout and keep
//! its tasks).
//!
//! The HTTP side ([`scheduler`]) runs on the server's blocking threads;
//! it hands each call to the master through a bounded channel
//! ([`ApiSender`]) and waits for the answer, never touching the books.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_api::scheduler::{Call, CallType, Event, Translated};
use strata_protocol::{FrameworkId, FrameworkInfo, ToMaster, ToScheduler};
use strata_runtime::Upid;
use strata_runtime::http::{Request, Response};
use strata_runtime::tls::{PeerIdentity, Role};
use tokio::sync::mpsc;

/// Events a subscription may have unread before its stream is closed.
pub const EVENT_BUFFER: usize = 1024;

/// Bytes of events a subscription may have unread (queued or being
/// written) before its stream is closed: a client that does not read
/// holds at most this much of the master's memory.
pub const EVENT_BYTES: usize = 16 << 20;

/// Subscriptions open at once; more are refused (each holds one of the
/// server's connections for as long as it lasts).
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// Calls waiting for the master before more are answered 503.
pub const MAX_PENDING_CALLS: usize = 1024;

/// How long a call waits for the master's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a subscription was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub stream_id: String,
    pub framework_id: FrameworkId,
}

type Answer<T> = std::sync::mpsc::SyncSender<Result<T, String>>;

/// A call handed from the HTTP side to the master.
#[derive(Debug)]
pub enum ApiCall {
    Subscribe {
        info: FrameworkInfo,
        /// Who HTTP authentication says sent it, if it was asked for.
        principal: Option<String>,
        events: mpsc::Sender<Bytes>,
        answer: Answer<Subscription>,
    },
    Call {
        stream_id: String,
        framework_id: FrameworkId,
        message: ToMaster,
        answer: Answer<()>,
    },
    /// A call of the operator API (see [`crate::operator`]).
    Operator(crate::operator::OperatorCall),
}

impl ApiCall {
    /// Answers the call with a refusal.
    pub fn refuse(self, reason: &str) {
        match self {
            ApiCall::Subscribe { answer, .. } => drop(answer.try_send(Err(reason.to_owned()))),
            ApiCall::Call { answer, .. } => drop(answer.try_send(Err(reason.to_owned()))),
            ApiCall::Operator(crate::operator::OperatorCall::Subscribe { answer, .. }) => {
                drop(answer.try_send(Err(reason.to_owned())))
            }
            ApiCall::Operator(crate::operator::OperatorCall::Change { answer, .. }) => {
                drop(answer.try_send(Err((503, reason.to_owned()))))
            }
        }
    }
}

/// The HTTP side's end of the channel to the master.
#[derive(Debug, Clone)]
pub struct ApiSender(mpsc::Sender<ApiCall>);

/// The master's end; shared so that a restarted master process takes it
/// over.
#[derive(Debug, Clone)]
pub struct ApiReceiver(Arc<tokio::sync::Mutex<mpsc::Receiver<ApiCall>>>);

pub fn channel() -> (ApiSender, ApiReceiver) {
    let (sender, receiver) = mpsc::channel(MAX_PENDING_CALLS);
    (
        ApiSender(sender),
        ApiReceiver(Arc::new(tokio::sync::Mutex::new(receiver))),
    )
}

impl ApiSender {
    /// Hands `call` to the master without waiting; a refusal to answer
    /// at once when it cannot take more or is not running.
    pub fn hand_over(&self, call: ApiCall) -> Result<(), Response> {
        match self.0.try_send(call) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(refused(
                503,
                "the master has too many calls waiting; try again",
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(refused(503, "the master is not running"))
            }
        }
    }
}

impl ApiReceiver {
    /// The next call; `None` once every sender is gone.
    pub async fn next(&self) -> Option<ApiCall> {
        self.0.lock().await.recv().await
    }
}

fn refused(status: u16, message: &str) -> Response {
    Response::error(status, message)
}

/// Hands `call` to the master and waits for its answer.
fn ask<T>(
    api: &ApiSender,
    call: impl FnOnce(Answer<T>) -> ApiCall,
) -> Result<Result<T, String>, Response> {
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    api.hand_over(call(answer))?;
    answered
        .recv_timeout(CALL_TIMEOUT)
        .map_err(|_| refused(503, "the master did not answer in time"))
}

/// `POST /api/v1/scheduler`.
pub fn scheduler(api: &ApiSender, request: &Request) -> Response {
    if request.method != "POST" {
        return refused(405, "the scheduler API takes POST");
    }
    if let Some(refusal) = strata_runtime::http::refuse_unless_json(request) {
        return refusal;
    }
    let call = match Call::parse(&request.body) {
        Ok(call) => call,
        Err(error) => return refused(error.status(), &error.to_string()),
    };
    let named = match call.framework_id() {
        Ok(named) => named,
        Err(error) => return refused(error.status(), &error.to_string()),
    };
    if call.kind == CallType::Subscribe {
        return subscribe(api, request, &call, named);
    }
    let Some(stream_id) = request.header("mesos-stream-id") else {
        return refused(
            403,
            "calls other than SUBSCRIBE carry the Mesos-Stream-Id header",
        );
    };
    let Some(framework_id) = named else {
        return refused(400, "the call names no framework_id");
    };
    let message = match call.to_protocol(&framework_id) {
        Ok(Translated::ToMaster(message)) => message,
        Ok(Translated::Nothing) => {
            return accepted();
        }
        Err(error) => return refused(error.status(), &error.to_string()),
    };
    let answer = ask(api, |answer| ApiCall::Call {
        stream_id: stream_id.to_owned(),
        framework_id,
        message,
        answer,
    });
    match answer {
        Ok(Ok(())) => accepted(),
        Ok(Err(reason)) => refused(403, &reason),
        Err(response) => response,
    }
}

fn subscribe(
    api: &ApiSender,
    request: &Request,
    call: &Call,
    named: Option<FrameworkId>,
) -> Response {
    let Some(subscribe) = &call.subscribe else {
        return refused(400, "invalid subscribe: the call's body is missing");
    };
    let info = match subscribe.framework_info.to_protocol() {
        Ok(info) => info,
        Err(error) => return refused(error.status(), &error.to_string()),
    };
    if named.is_some() && named != info.id {
        return refused(
            400,
            "framework_id and subscribe.framework_info.id name different frameworks",
        );
    }
    let (events, stream) = mpsc::channel(EVENT_BUFFER);
    let answer = ask(api, |answer| ApiCall::Subscribe {
        info,
        principal: request.principal.clone(),
        events,
        answer,
    });
    match answer {
        Ok(Ok(subscription)) => Response::streaming("application/json", stream)
            .with_header("Mesos-Stream-Id", subscription.stream_id),
        Ok(Err(reason)) => refused(403, &reason),
        Err(response) => response,
    }
}

/// 202 with no body, as every call but SUBSCRIBE is answered.
fn accepted() -> Response {
    let mut response = Response::text("application/json", Bytes::new());
    response.status = 202;
    response
}

/// The process ids of subscriptions start so, on the master's node.
const HTTP_PROCESS_PREFIX: &str = "scheduler-http-";

/// One subscription's stream, as the master keeps it.
#[derive(Debug)]
struct Stream {
    stream_id: String,
    /// Known once the books subscribed it.
    framework_id: Option<FrameworkId>,
    role: String,
    identity: Arc<PeerIdentity>,
    events: mpsc::Sender<Bytes>,
    /// Bytes of its events not yet written and dropped by the server.
    unread: Arc<std::sync::atomic::AtomicUsize>,
    /// The SUBSCRIBE waiting for the books' answer.
    waiting: Option<Answer<Subscription>>,
}

/// An event's bytes that give their size back to their stream's count
/// when the server has written and dropped them.
struct Counted {
    record: Vec<u8>,
    unread: Arc<std::sync::atomic::AtomicUsize>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.record
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.unread
            .fetch_sub(self.record.len(), std::sync::atomic::Ordering::SeqCst);
    }
}

impl Stream {
    /// Queues `record`; false when the stream is gone or would have more
    /// than [`EVENT_BUFFER`] events or [`EVENT_BYTES`] bytes unread (one
    /// larger event is taken when nothing else is unread).
    fn push(&self, record: Vec<u8>) -> bool {
        use std::sync::atomic::Ordering;
        let size = record.len();
        let unread = self.unread.load(Ordering::SeqCst);
        // One event larger than the bound (the offers of a very large
        // cluster) still goes out on a stream that has read everything.
        if unread > 0 && unread.saturating_add(size) > EVENT_BYTES {
            return false;
        }
        self.unread.fetch_add(size, Ordering::SeqCst);
        let counted = Bytes::from_owner(Counted {
            record,
            unread: self.unread.clone(),
        });
        self.events.try_send(counted).is_ok()
    }
}

/// The master's HTTP frameworks: their streams by process id.
#[derive(Debug, Default)]
pub struct HttpFrameworks {
    streams: HashMap<Upid, Stream>,
    by_stream_id: HashMap<String, Upid>,
    next: u64,
    /// The master's MasterInfo id, for SUBSCRIBED events.
    master_id: String,
}

/// What the master does with a call from the HTTP side.
// Made and taken at once, never stored: the size of a message is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Admitted {
    /// Enters the books as this message from this process.
    Message {
        from: Upid,
        sender: Arc<PeerIdentity>,
        message: ToMaster,
    },
    /// Enters the books as this message from this process; answered
    /// once the books decided (a refusal is the call's answer, not an
    /// ERROR event: UPDATE_FRAMEWORK).
    Checked {
        from: Upid,
        sender: Arc<PeerIdentity>,
        message: ToMaster,
        answer: Answer<()>,
    },
    /// Answered already (refused).
    Answered,
}

impl HttpFrameworks {
    pub fn new(master_id: &str) -> HttpFrameworks {
        HttpFrameworks {
            master_id: master_id.to_owned(),
            ..HttpFrameworks::default()
        }
    }

    /// Whether `pid` is an HTTP framework's.
    pub fn serves(&self, pid: &Upid) -> bool {
        self.streams.contains_key(pid)
    }

    /// Whether `pid` is, or was, a subscription's process on the master's
    /// node (`master`): what the books send to one that is gone goes
    /// nowhere, not over the network.
    pub fn owns(master: &Upid, pid: &Upid) -> bool {
        pid.addr() == master.addr() && pid.id().starts_with(HTTP_PROCESS_PREFIX)
    }

    /// Takes a call from the HTTP side; `master` is the master's own
    /// process id, on whose node subscriptions get theirs, and
    /// `stream_id` a fresh unguessable id for a new subscription.
    pub fn admit(&mut self, master: &Upid, stream_id: String, call: ApiCall) -> Admitted {
        match call {
            ApiCall::Subscribe {
                info,
                principal,
                events,
                answer,
            } => {
                if self.streams.len() >= MAX_SUBSCRIPTIONS {
                    let _ = answer.try_send(Err(format!(
                        "the master has {MAX_SUBSCRIPTIONS} subscriptions open, the most it takes"
                    )));
                    return Admitted::Answered;
                }
                self.next += 1;
                let id = format!("{HTTP_PROCESS_PREFIX}{}", self.next);
                let Ok(pid) = Upid::new(&id, master.addr(), master.incarnation()) else {
                    let _ = answer.try_send(Err("no process id for the subscription".into()));
                    return Admitted::Answered;
                };
                // Without HTTP authentication, the principal is the one
                // the framework names, as Mesos takes it.
                let name = principal
                    .or_else(|| info.principal.clone())
                    .unwrap_or_default();
                let identity = Arc::new(PeerIdentity {
                    role: Some(Role::Framework),
                    name,
                    fingerprint: "http".to_owned(),
                });
                self.by_stream_id.insert(stream_id.clone(), pid.clone());
                self.streams.insert(
                    pid.clone(),
                    Stream {
                        stream_id,
                        framework_id: None,
                        role: info.role().to_owned(),
                        identity: identity.clone(),
                        events,
                        unread: Default::default(),
                        waiting: Some(answer),
                    },
                );
                Admitted::Message {
                    from: pid,
                    sender: identity,
                    message: ToMaster::Subscribe {
                        info,
                        constraints: Vec::new(),
                    },
                }
            }
            ApiCall::Operator(call) => {
                ApiCall::Operator(call).refuse("not a scheduler API call");
                Admitted::Answered
            }
            ApiCall::Call {
                stream_id,
                framework_id,
                message,
                answer,
            } => {
                let stream = self
                    .by_stream_id
                    .get(&stream_id)
                    .and_then(|pid| Some((pid, self.streams.get(pid)?)));
                let Some((pid, stream)) = stream else {
                    let _ = answer
                        .try_send(Err(format!("no subscription has stream id {stream_id:?}")));
                    return Admitted::Answered;
                };
                if stream.framework_id.as_ref() != Some(&framework_id) {
                    let _ = answer.try_send(Err(format!(
                        "stream {stream_id:?} is not framework {framework_id}'s"
                    )));
                    return Admitted::Answered;
                }
                if matches!(message, ToMaster::UpdateFramework { .. }) {
                    return Admitted::Checked {
                        from: pid.clone(),
                        sender: stream.identity.clone(),
                        message,
                        answer,
                    };
                }
                if answer.try_send(Ok(())).is_err() {
                    // The client gave up waiting (and was told 503): the
                    // call is not made behind its back.
                    return Admitted::Answered;
                }
                Admitted::Message {
                    from: pid.clone(),
                    sender: stream.identity.clone(),
                    message,
                }
            }
        }
    }

    /// Writes what the books send to `pid` as an event on its stream.
    /// Returns false when the stream is gone or full: its framework is
    /// then to be disconnected ([`HttpFrameworks::forget`]).
    pub fn deliver(&mut self, master: &Upid, pid: &Upid, message: &ToScheduler) -> bool {
        let Some(stream) = self.streams.get_mut(pid) else {
            return true;
        };
        let event = match message {
            ToScheduler::Subscribed { framework_id, .. } => {
                stream.framework_id = Some(framework_id.clone());
                if let Some(waiting) = stream.waiting.take() {
                    let answered = waiting.try_send(Ok(Subscription {
                        stream_id: stream.stream_id.clone(),
                        framework_id: framework_id.clone(),
                    }));
                    if answered.is_err() {
                        // The client gave up waiting: its framework is
                        // disconnected at once.
                        return false;
                    }
                }
                let event = Event::subscribed(
                    framework_id,
                    strata_api::mesos::MasterInfo::of(master, &self.master_id),
                );
                let framework_id = framework_id.clone();
                let delivered = stream.push(event.record());
                self.close_others(pid, &framework_id);
                return delivered;
            }
            ToScheduler::Error { message } if stream.waiting.is_some() => {
                // The SUBSCRIBE was refused: answered, no stream opens.
                if let Some(waiting) = stream.waiting.take() {
                    let _ = waiting.try_send(Err(message.clone()));
                }
                self.forget(pid);
                return true;
            }
            other => match Event::from_protocol(other, &stream.role) {
                Some(event) => event,
                None => return true,
            },
        };
        stream.push(event.record())
    }

    /// Sends a heartbeat on every subscribed stream; returns the process
    /// ids of streams that are gone.
    pub fn heartbeat(&mut self) -> Vec<Upid> {
        let record = Event::heartbeat().record();
        self.streams
            .iter()
            .filter(|(_, stream)| stream.framework_id.is_some())
            .filter(|(_, stream)| !stream.push(record.clone()))
            .map(|(pid, _)| pid.clone())
            .collect()
    }

    /// Closes the other streams of `framework_id` (a framework that
    /// subscribed again elsewhere), telling them why.
    fn close_others(&mut self, pid: &Upid, framework_id: &FrameworkId) {
        let others: Vec<Upid> = self
            .streams
            .iter()
            .filter(|(other, stream)| {
                *other != pid && stream.framework_id.as_ref() == Some(framework_id)
            })
            .map(|(other, _)| other.clone())
            .collect();
        let record = Event::error("the framework subscribed again on another connection").record();
        for other in others {
            if let Some(stream) = self.streams.get(&other) {
                let _ = stream.push(record.clone());
            }
            self.forget(&other);
        }
    }

    /// Ends the streams of `framework_id`, which the master removed
    /// (an operator tore it down, or its failover timeout passed),
    /// telling them why.
    pub fn close_framework(&mut self, framework_id: &FrameworkId, reason: &str) {
        let gone: Vec<Upid> = self
            .streams
            .iter()
            .filter(|(_, stream)| stream.framework_id.as_ref() == Some(framework_id))
            .map(|(pid, _)| pid.clone())
            .collect();
        let record =
            Event::error(format!("framework {framework_id} was removed: {reason}")).record();
        for pid in gone {
            if let Some(stream) = self.streams.get(&pid) {
                let _ = stream.push(record.clone());
            }
            self.forget(&pid);
        }
    }

    /// Forgets `pid`'s stream (closing it).
    pub fn forget(&mut self, pid: &Upid) {
        if let Some(stream) = self.streams.remove(pid) {
            self.by_stream_id.remove(&stream.stream_id);
        }
    }
}

/// Where frameworks reach the scheduler API.
pub const SCHEDULER_PATHS: [&str; 2] = ["/api/v1/scheduler", "/master/api/v1/scheduler"];

/// Who may use the scheduler API.
#[derive(Debug, Clone)]
pub enum FrameworkAccess {
    /// Nobody: the API answers 403 saying how to turn it on.
    Off,
    /// Any client that reaches the port, under the principal its
    /// FrameworkInfo names (Mesos without `--authenticate_http_frameworks`).
    Unauthenticated,
    /// Frameworks that authenticate (HTTP Basic, or a bearer token) with
    /// these credentials, under the principal they authenticate as.
    Authenticated(Arc<strata_runtime::http_auth::HttpCredentials>),
}

/// The master's endpoints with the scheduler API in front: its paths go
/// to [`scheduler`] as `access` allows, every other to `rest`.
pub fn routes(
    api: ApiSender,
    access: FrameworkAccess,
    rest: impl Fn(&Request) -> Response + Send + Sync + 'static,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    let credentials = match &access {
        FrameworkAccess::Authenticated(credentials) => Some(credentials.clone()),
        FrameworkAccess::Off | FrameworkAccess::Unauthenticated => None,
    };
    let open = !matches!(access, FrameworkAccess::Off);
    let scheduler = strata_runtime::http_auth::guard(credentials, &[], move |request: &Request| {
        scheduler(&api, request)
    });
    move |request: &Request| {
        let certified = request.peer.as_ref().map(|peer| peer.is(Role::Framework));
        if !SCHEDULER_PATHS.contains(&request.path.as_str()) {
            rest(request)
        } else if let (Some(false), Some(peer)) = (certified, &request.peer) {
            refused(
                403,
                &format!(
                    "the scheduler API takes a framework's certificate; this one is for {peer}"
                ),
            )
        } else if open || certified == Some(true) {
            // A framework's certificate authenticates its principal
            // whatever else the master accepts.
            scheduler(request)
        } else {
            refused(
                403,
                "the scheduler API needs a framework's certificate over HTTPS, or a master started with --authenticate-http-frameworks (and --http-credentials) or --allow-unauthenticated-http-frameworks",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> Upid {
        "master@127.0.0.1:5050".parse().unwrap()
    }

    fn subscribe(
        frameworks: &mut HttpFrameworks,
    ) -> (
        Upid,
        mpsc::Receiver<Bytes>,
        std::sync::mpsc::Receiver<Result<Subscription, String>>,
    ) {
        let (events, stream) = mpsc::channel(2);
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let call = ApiCall::Subscribe {
            info: FrameworkInfo::new("f", "u"),
            principal: None,
            events,
            answer,
        };
        let Admitted::Message { from, message, .. } =
            frameworks.admit(&master(), "s1".into(), call)
        else {
            panic!("not admitted");
        };
        assert!(matches!(message, ToMaster::Subscribe { .. }));
        assert!(frameworks.serves(&from));
        (from, stream, answered)
    }

    fn call(
        frameworks: &mut HttpFrameworks,
        stream_id: &str,
        framework: &str,
    ) -> Result<(), String> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let framework_id = FrameworkId::new(framework).unwrap();
        let message = ToMaster::Revive {
            framework_id: framework_id.clone(),
        };
        frameworks.admit(
            &master(),
            String::new(),
            ApiCall::Call {
                stream_id: stream_id.into(),
                framework_id,
                message,
                answer,
            },
        );
        answered.try_recv().unwrap()
    }

    /// A client that does not read holds at most EVENT_BYTES of events,
    /// however few they are; what it reads is counted off.
    #[test]
    fn a_stream_is_bounded_in_bytes_too() {
        let mut frameworks = HttpFrameworks::new("m");
        let (events, mut stream) = mpsc::channel(EVENT_BUFFER);
        let (answer, _answered) = std::sync::mpsc::sync_channel(1);
        let call = ApiCall::Subscribe {
            info: FrameworkInfo::new("f", "u"),
            principal: None,
            events,
            answer,
        };
        let Admitted::Message { from: pid, .. } = frameworks.admit(&master(), "s1".into(), call)
        else {
            panic!("not admitted");
        };
        let subscribed = ToScheduler::Subscribed {
            framework_id: FrameworkId::new("m-F1").unwrap(),
            epoch: 1,
        };
        assert!(frameworks.deliver(&master(), &pid, &subscribed));
        let big = ToScheduler::Error {
            message: "x".repeat(1 << 20),
        };
        let mut delivered = 0;
        while frameworks.deliver(&master(), &pid, &big) {
            delivered += 1;
            assert!(delivered < 64, "no bound in bytes");
        }
        assert_eq!(delivered, EVENT_BYTES / (1 << 20) - 1);
        // Read (and dropped, as the server does once written): room again.
        while let Ok(read) = stream.try_recv() {
            drop(read);
        }
        assert!(frameworks.deliver(&master(), &pid, &big));
        drop(stream.try_recv());
        // One event above the bound goes out when nothing else waits.
        let huge = ToScheduler::Error {
            message: "x".repeat(EVENT_BYTES + 1),
        };
        assert!(frameworks.deliver(&master(), &pid, &huge));
        assert!(!frameworks.deliver(&master(), &pid, &big));
    }

    #[test]
    fn calls_that_are_not_json_are_refused() {
        let (api, _calls) = channel();
        let mut request = Request {
            method: "POST".into(),
            path: "/api/v1/scheduler".into(),
            ..Request::default()
        };
        request
            .headers
            .push(("accept".into(), "application/x-protobuf".into()));
        assert_eq!(scheduler(&api, &request).status, 406);
        request.headers = vec![("content-type".into(), "application/x-protobuf".into())];
        let refused = scheduler(&api, &request);
        assert_eq!(refused.status, 415);
        assert!(String::from_utf8_lossy(&refused.body).contains("application/json"));
        request.headers = vec![("accept".into(), "application/json, */*".into())];
        request.body = Bytes::from_static(b"{");
        assert_eq!(scheduler(&api, &request).status, 400);
    }

    #[test]
    fn calls_act_only_through_their_own_subscribed_stream() {
        let mut frameworks = HttpFrameworks::new("m");
        let (pid, mut stream, answered) = subscribe(&mut frameworks);
        // Not yet subscribed by the books: no call is taken.
        assert!(call(&mut frameworks, "s1", "m-F1").is_err());
        let subscribed = ToScheduler::Subscribed {
            framework_id: FrameworkId::new("m-F1").unwrap(),
            epoch: 1,
        };
        assert!(frameworks.deliver(&master(), &pid, &subscribed));
        let subscription = answered.try_recv().unwrap().unwrap();
        assert_eq!(subscription.stream_id, "s1");
        let first = stream.try_recv().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("\"SUBSCRIBED\""));
        assert_eq!(call(&mut frameworks, "s1", "m-F1"), Ok(()));
        assert!(
            call(&mut frameworks, "s1", "m-F2")
                .unwrap_err()
                .contains("not framework")
        );
        assert!(
            call(&mut frameworks, "s2", "m-F1")
                .unwrap_err()
                .contains("no subscription")
        );
    }

    #[test]
    fn a_framework_that_subscribes_again_closes_its_old_stream() {
        let mut frameworks = HttpFrameworks::new("m");
        let subscribed = ToScheduler::Subscribed {
            framework_id: FrameworkId::new("m-F1").unwrap(),
            epoch: 1,
        };
        let (old, mut old_stream, _answered) = subscribe(&mut frameworks);
        assert!(frameworks.deliver(&master(), &old, &subscribed));
        let (new, _new_stream, _answered_again) = subscribe(&mut frameworks);
        assert!(frameworks.deliver(&master(), &new, &subscribed));
        assert!(!frameworks.serves(&old) && frameworks.serves(&new));
        let _subscribed = old_stream.try_recv().unwrap();
        let error = old_stream.try_recv().unwrap();
        assert!(String::from_utf8_lossy(&error).contains("subscribed again"));
        assert!(old_stream.try_recv().is_err(), "the old stream is closed");
        // What the books still send the old process goes nowhere.
        assert!(HttpFrameworks::owns(&master(), &old));
        assert!(!HttpFrameworks::owns(
            &master(),
            &"scheduler-1@127.0.0.1:5050".parse().unwrap()
        ));
        assert!(!HttpFrameworks::owns(
            &"master@127.0.0.2:5050".parse().unwrap(),
            &old
        ));
    }

    #[test]
    fn a_refused_subscribe_is_answered_and_a_full_or_gone_stream_reported() {
        let mut frameworks = HttpFrameworks::new("m");
        let (pid, _stream, answered) = subscribe(&mut frameworks);
        let refusal = ToScheduler::Error {
            message: "no".into(),
        };
        assert!(frameworks.deliver(&master(), &pid, &refusal));
        assert_eq!(answered.try_recv().unwrap(), Err("no".to_owned()));
        assert!(!frameworks.serves(&pid));

        let (pid, stream, _answered) = subscribe(&mut frameworks);
        let subscribed = ToScheduler::Subscribed {
            framework_id: FrameworkId::new("m-F1").unwrap(),
            epoch: 1,
        };
        assert!(frameworks.deliver(&master(), &pid, &subscribed));
        // A reader that does not read: the buffer of two fills.
        let error = ToScheduler::Error {
            message: "x".into(),
        };
        assert!(frameworks.deliver(&master(), &pid, &error));
        assert!(!frameworks.deliver(&master(), &pid, &error));
        assert_eq!(frameworks.heartbeat(), vec![pid.clone()]);
        drop(stream);
        assert!(!frameworks.deliver(&master(), &pid, &error));
        frameworks.forget(&pid);
        assert!(!frameworks.serves(&pid));
        assert!(frameworks.heartbeat().is_empty());
    }
}
