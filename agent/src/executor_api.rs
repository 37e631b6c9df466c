//! The v1 executor API on the agent's HTTP port: a custom executor in
//! any language POSTs JSON calls to `/api/v1/executor` and reads its
//! events from the RecordIO stream its SUBSCRIBE opened.
//!
//! An HTTP executor is an ordinary executor to the agent. A SUBSCRIBE is
//! taken only for an executor the agent started that has not registered;
//! its answer carries an unguessable `Mesos-Stream-Id` that later calls
//! must carry. The subscription gets a process id of its own on the
//! agent's node (`executor-http-N`) and the identity the agent would
//! have issued it a certificate for; its calls enter the agent as a
//! certificate-holding
//! executor's messages would, and what the agent sends to that id is
//! written to its stream as events. A stream whose client is gone, or
//! with [`EVENT_BUFFER`] events unread, is taken as the executor's
//! connection breaking (the agent kills it and fails its tasks, as for
//! one whose link broke). UPDATE is answered ACKNOWLEDGED once the agent
//! holds the update: from then on the agent delivers it to the framework
//! at least once.
//!
//! The HTTP side ([`routes`]) runs on the server's blocking threads and
//! hands each call to the agent through a bounded channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_api::executor::{Call, CallType, Event};
use strata_protocol::{ExecutorId, FrameworkId, ToAgent};
use strata_runtime::Upid;
use strata_runtime::http::{Request, Response};
use strata_runtime::tls::{PeerIdentity, Role};
use tokio::sync::mpsc;

/// Events an executor may have unread before its stream is closed.
pub const EVENT_BUFFER: usize = 1024;

/// Calls waiting for the agent before more are answered 503.
pub const MAX_PENDING_CALLS: usize = 256;

/// How long a call waits for the agent's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where executors reach the API.
pub const EXECUTOR_PATH: &str = "/api/v1/executor";

/// The process ids of HTTP executors start so, on the agent's node.
const HTTP_PROCESS_PREFIX: &str = "executor-http-";

type Answer<T> = std::sync::mpsc::SyncSender<Result<T, String>>;

/// A call handed from the HTTP side to the agent.
// Made and taken at once, never stored: the size of a message is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ExecutorCall {
    /// Answered with the subscription's stream id.
    Subscribe {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        events: mpsc::Sender<Bytes>,
        answer: Answer<String>,
    },
    /// Taken only with the stream id its subscription was given.
    Call {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        stream_id: String,
        message: ToAgent,
        answer: Answer<()>,
    },
}

/// The HTTP side's end of the channel to the agent.
#[derive(Debug, Clone)]
pub struct ExecutorApiSender(mpsc::Sender<ExecutorCall>);

/// The agent's end; shared so that a restarted agent process takes it
/// over.
#[derive(Debug, Clone)]
pub struct ExecutorApiReceiver(Arc<tokio::sync::Mutex<mpsc::Receiver<ExecutorCall>>>);

pub fn channel() -> (ExecutorApiSender, ExecutorApiReceiver) {
    let (sender, receiver) = mpsc::channel(MAX_PENDING_CALLS);
    (
        ExecutorApiSender(sender),
        ExecutorApiReceiver(Arc::new(tokio::sync::Mutex::new(receiver))),
    )
}

impl ExecutorApiReceiver {
    /// The next call; `None` once every sender is gone.
    pub async fn next(&self) -> Option<ExecutorCall> {
        self.0.lock().await.recv().await
    }
}

/// Who may use the executor API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorAccess {
    /// Nobody: executors register with the certificates the agent gives
    /// them, over QUIC.
    Off,
    /// Any client that reaches the port, for the executors this agent
    /// started and that have not registered yet (Mesos without executor
    /// authentication).
    Unauthenticated,
}

/// Hands `call` to the agent and waits for its answer.
fn ask<T>(
    api: &ExecutorApiSender,
    call: ExecutorCall,
    answered: std::sync::mpsc::Receiver<Result<T, String>>,
) -> Result<Result<T, String>, Response> {
    match api.0.try_send(call) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            return Err(Response::error(
                503,
                "the agent has too many calls waiting; try again",
            ));
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return Err(Response::error(503, "the agent is not running"));
        }
    }
    answered
        .recv_timeout(CALL_TIMEOUT)
        .map_err(|_| Response::error(503, "the agent did not answer in time"))
}

/// `POST /api/v1/executor`.
pub fn executor(api: &ExecutorApiSender, request: &Request) -> Response {
    if request.method != "POST" {
        return Response::error(405, "the executor API takes POST");
    }
    if let Some(refusal) = strata_runtime::http::refuse_unless_json(request) {
        return refusal;
    }
    let call = match Call::parse(&request.body) {
        Ok(call) => call,
        Err(error) => return Response::error(error.status(), &error.to_string()),
    };
    let (framework_id, executor_id) = match call.ids() {
        Ok(ids) => ids,
        Err(error) => return Response::error(error.status(), &error.to_string()),
    };
    // Over HTTPS with a client certificate, it must be the one the agent
    // issued this executor.
    if let Some(peer) = &request.peer
        && !crate::credentials::is_executor(peer, &framework_id, &executor_id)
    {
        return Response::error(
            403,
            &format!(
                "the client certificate is for {peer}, not for executor {executor_id} of framework {framework_id}"
            ),
        );
    }
    if call.kind == CallType::Subscribe {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let (events, stream) = mpsc::channel(EVENT_BUFFER);
        let subscribe = ExecutorCall::Subscribe {
            framework_id,
            executor_id,
            events,
            answer,
        };
        return match ask(api, subscribe, answered) {
            Ok(Ok(stream_id)) => Response::streaming("application/json", stream)
                .with_header("Mesos-Stream-Id", stream_id),
            Ok(Err(reason)) => Response::error(403, &reason),
            Err(response) => response,
        };
    }
    let Some(stream_id) = request.header("mesos-stream-id") else {
        return Response::error(
            403,
            "calls other than SUBSCRIBE carry the Mesos-Stream-Id their subscription was answered with",
        );
    };
    let message = match call.to_protocol() {
        Ok(message) => message,
        Err(error) => return Response::error(error.status(), &error.to_string()),
    };
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    let call = ExecutorCall::Call {
        framework_id,
        executor_id,
        stream_id: stream_id.to_owned(),
        message,
        answer,
    };
    match ask(api, call, answered) {
        Ok(Ok(())) => {
            let mut response = Response::text("application/json", Bytes::new());
            response.status = 202;
            response
        }
        Ok(Err(reason)) => Response::error(403, &reason),
        Err(response) => response,
    }
}

/// The agent's endpoints with the executor API in front, as `access`
/// allows.
pub fn routes(
    api: ExecutorApiSender,
    access: ExecutorAccess,
    rest: impl Fn(&Request) -> Response + Send + Sync + 'static,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    move |request: &Request| {
        if request.path != EXECUTOR_PATH {
            return rest(request);
        }
        // An executor's certificate (in its sandbox's .tls) authenticates
        // it whatever else the agent allows; `executor` checks it is this
        // executor's.
        let certified = request.peer.is_some();
        match access {
            ExecutorAccess::Unauthenticated => executor(&api, request),
            ExecutorAccess::Off if certified => executor(&api, request),
            ExecutorAccess::Off => Response::error(
                403,
                "the executor API needs the executor's certificate (in its sandbox's .tls) over HTTPS, or an agent started with --allow-unauthenticated-http-executors",
            ),
        }
    }
}

/// One HTTP executor's stream, as the agent keeps it.
#[derive(Debug)]
struct Stream {
    framework_id: FrameworkId,
    executor_id: ExecutorId,
    /// Unguessable: what lets a call act for this executor.
    stream_id: String,
    /// The identity its calls enter the agent under.
    identity: PeerIdentity,
    events: mpsc::Sender<Bytes>,
}

/// The agent's HTTP executors: their streams by process id.
#[derive(Debug, Default)]
pub struct HttpExecutors {
    streams: HashMap<Upid, Stream>,
    next: u64,
}

impl HttpExecutors {
    /// Whether `pid` is an HTTP executor's.
    pub fn serves(&self, pid: &Upid) -> bool {
        self.streams.contains_key(pid)
    }

    /// Whether `pid` is, or was, an HTTP executor's on the agent's node
    /// (`agent`): nothing is sent to it over the network, nor linked.
    pub fn owns(agent: &Upid, pid: &Upid) -> bool {
        pid.addr() == agent.addr() && pid.id().starts_with(HTTP_PROCESS_PREFIX)
    }

    /// Opens a stream for `framework_id`'s executor `executor_id`: its
    /// process id, its stream id and the identity it speaks under. An
    /// older stream of the same executor is closed.
    pub fn open(
        &mut self,
        agent: &Upid,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        events: mpsc::Sender<Bytes>,
    ) -> Option<(Upid, String, PeerIdentity)> {
        let stream_id = strata_runtime::random::unguessable_id()?;
        self.next += 1;
        let pid = Upid::new(
            &format!("{HTTP_PROCESS_PREFIX}{}", self.next),
            agent.addr(),
            agent.incarnation(),
        )
        .ok()?;
        let older: Vec<Upid> = self
            .streams
            .iter()
            .filter(|(_, stream)| {
                stream.framework_id == framework_id && stream.executor_id == executor_id
            })
            .map(|(pid, _)| pid.clone())
            .collect();
        for older in older {
            self.forget(&older);
        }
        let identity = PeerIdentity {
            role: Some(Role::Executor),
            name: crate::credentials::executor_name(&framework_id, &executor_id),
            fingerprint: "http".to_owned(),
        };
        self.streams.insert(
            pid.clone(),
            Stream {
                framework_id,
                executor_id,
                stream_id: stream_id.clone(),
                identity: identity.clone(),
                events,
            },
        );
        Some((pid, stream_id, identity))
    }

    /// The process id and identity of `framework_id`'s executor
    /// `executor_id` if `stream_id` is its stream's; why not otherwise.
    pub fn of(
        &self,
        framework_id: &FrameworkId,
        executor_id: &ExecutorId,
        stream_id: &str,
    ) -> Result<(Upid, PeerIdentity), String> {
        let (pid, stream) = self
            .streams
            .iter()
            .find(|(_, stream)| {
                stream.framework_id == *framework_id && stream.executor_id == *executor_id
            })
            .ok_or_else(|| {
                format!("executor {executor_id} of framework {framework_id} has not subscribed")
            })?;
        if stream.stream_id.len() != stream_id.len()
            || stream
                .stream_id
                .bytes()
                .zip(stream_id.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0
        {
            return Err(format!(
                "stream {stream_id:?} is not executor {executor_id}'s"
            ));
        }
        Ok((pid.clone(), stream.identity.clone()))
    }

    /// Writes `event` on `pid`'s stream; false when it is gone or full.
    pub fn send(&self, pid: &Upid, event: &Event) -> bool {
        self.streams
            .get(pid)
            .is_some_and(|stream| stream.events.try_send(Bytes::from(event.record())).is_ok())
    }

    /// Sends a heartbeat on every stream; the process ids of those gone.
    pub fn heartbeat(&self) -> Vec<Upid> {
        let record = Bytes::from(Event::heartbeat().record());
        self.streams
            .iter()
            .filter(|(_, stream)| stream.events.try_send(record.clone()).is_err())
            .map(|(pid, _)| pid.clone())
            .collect()
    }

    /// Forgets `pid`'s stream (closing it).
    pub fn forget(&mut self, pid: &Upid) {
        self.streams.remove(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Upid {
        "agent@127.0.0.1:5051".parse().unwrap()
    }

    #[test]
    fn a_subscription_gets_an_executor_identity_and_a_stream_id_its_calls_need() {
        let mut executors = HttpExecutors::default();
        let framework_id: FrameworkId = "m-F1".parse().unwrap();
        let executor_id: ExecutorId = "ex".parse().unwrap();
        let (events, mut first_stream) = mpsc::channel(4);
        let (first, first_id, identity) = executors
            .open(&agent(), framework_id.clone(), executor_id.clone(), events)
            .unwrap();
        assert_eq!(
            executors.of(&framework_id, &executor_id, &first_id),
            Ok((first.clone(), identity.clone()))
        );
        assert!(
            executors
                .of(&framework_id, &executor_id, "guessed")
                .is_err()
        );
        assert!(crate::credentials::is_executor(
            &identity,
            &framework_id,
            &executor_id
        ));
        assert!(HttpExecutors::owns(&agent(), &first));
        assert!(executors.send(&first, &Event::heartbeat()));
        assert!(first_stream.try_recv().is_ok());
        let (events, _second_stream) = mpsc::channel(4);
        let (second, second_id, _) = executors
            .open(&agent(), framework_id.clone(), executor_id.clone(), events)
            .unwrap();
        assert!(!executors.serves(&first) && executors.serves(&second));
        assert!(
            executors
                .of(&framework_id, &executor_id, &first_id)
                .is_err()
        );
        assert_eq!(
            executors
                .of(&framework_id, &executor_id, &second_id)
                .map(|(pid, _)| pid),
            Ok(second)
        );
        assert!(!executors.send(&first, &Event::heartbeat()));
        // The first stream ended with its sender.
        assert!(first_stream.try_recv().is_err());
    }

    #[test]
    fn bad_calls_are_refused_before_reaching_the_agent() {
        let (api, calls) = channel();
        let call = |body: &str, content_type: &str| {
            let request = Request {
                method: "POST".into(),
                path: EXECUTOR_PATH.into(),
                headers: vec![("content-type".into(), content_type.into())],
                body: Bytes::from(body.to_owned()),
                ..Request::default()
            };
            executor(&api, &request).status
        };
        assert_eq!(call("{", "application/json"), 400);
        // A call without its subscription's stream id.
        assert_eq!(
            call(
                r#"{"type": "MESSAGE", "framework_id": {"value": "f"}, "executor_id": {"value": "e"}, "message": {"data": ""}}"#,
                "application/json"
            ),
            403
        );
        assert_eq!(call("{}", "application/x-protobuf"), 415);
        assert_eq!(
            call(
                r#"{"type": "UPDATE", "framework_id": {"value": "f"}, "executor_id": {"value": "../e"}}"#,
                "application/json"
            ),
            400
        );
        let off = routes(api.clone(), ExecutorAccess::Off, |_: &Request| {
            Response::error(404, "no")
        });
        let request = Request {
            method: "POST".into(),
            path: EXECUTOR_PATH.into(),
            ..Request::default()
        };
        assert_eq!(off(&request).status, 403);

        // Over HTTPS, a certificate must be this executor's.
        let subscribe = r#"{"type": "SUBSCRIBE", "framework_id": {"value": "f"}, "executor_id": {"value": "e"}, "subscribe": {}}"#;
        let with = |role: Role, name: &str| Request {
            method: "POST".into(),
            path: EXECUTOR_PATH.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from_static(subscribe.as_bytes()),
            peer: Some(PeerIdentity::simulated(Some(role), name)),
            ..Request::default()
        };
        for (role, name) in [
            (Role::Executor, "f/other"),
            (Role::Executor, "g/e"),
            (Role::Framework, "f/e"),
            (Role::Operator, "ops"),
        ] {
            let answer = off(&with(role, name));
            assert_eq!(answer.status, 403, "{role} {name}");
            let text = String::from_utf8_lossy(&answer.body).into_owned();
            assert!(text.contains("not for executor e of framework f"), "{text}");
        }
        // The right one reaches the agent.
        let right = std::thread::spawn(move || off(&with(Role::Executor, "f/e")).status);
        let reached = calls.0.blocking_lock().blocking_recv().unwrap();
        assert!(matches!(reached, ExecutorCall::Subscribe { .. }));
        drop(reached);
        // Unanswered, here.
        assert_eq!(right.join().unwrap(), 503);
    }
}
