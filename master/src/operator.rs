//! The v1 operator API on the master's HTTP port (`POST /api/v1`, also
//! `/master/api/v1`), and the v0 endpoints tools read (`/master/state`,
//! `/master/state.json`, `/state.json`, `/master/flags`, `/flags`).
//!
//! Calls that read (GET_STATE, GET_TASKS, ...) are answered on the
//! server's blocking threads from a fresh snapshot ([`Snapshots::fresh`]),
//! filtered by the view ACLs for the caller's principal, so they never
//! reach the master. SUBSCRIBE, TEARDOWN and MARK_AGENT_GONE go to the
//! master through the scheduler API's bounded channel
//! ([`crate::api::ApiCall::Operator`]). A subscription's stream starts
//! with SUBSCRIBED (the state, from a snapshot the master takes when it
//! admits the subscription), then carries what the master does as events;
//! events become JSON in a task of the stream's own, off the master's
//! thread, and a stream whose client does not read is closed once
//! [`EVENT_BUFFER`] events wait.
//!
//! Calls that change the cluster need an operator who may: with
//! [`WriteAccess::Authenticated`] a principal from the HTTP credentials
//! (and, for TEARDOWN, the `teardown_frameworks` ACL).

use std::sync::Arc;

use bytes::Bytes;
use strata_api::operator::{Call, CallType, Event};
use strata_protocol::ToMaster;
use strata_runtime::http::{Request, Response};
use strata_runtime::tls::Role;
use tokio::sync::mpsc;

use crate::api::{ApiCall, ApiSender};
use crate::authorization::Authorizer;
use crate::state::{FRESH_SNAPSHOT_WAIT, Snapshots, State};

/// Events a subscription may have waiting before its stream is closed.
pub const EVENT_BUFFER: usize = 1024;

/// Operator streams open at once; more are refused.
pub const MAX_SUBSCRIPTIONS: usize = 64;

/// Where operators reach the v1 operator API.
pub const OPERATOR_PATHS: [&str; 2] = ["/api/v1", "/master/api/v1"];

/// How the master answers a call that changes the cluster: done, or the
/// HTTP status and why not.
pub type ChangeResult = Result<(), (u16, String)>;

/// What an operator call asks of the master.
// Made and taken at once, never stored: the size of a message is fine.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum OperatorCall {
    /// Open a stream of events.
    Subscribe {
        events: mpsc::Sender<Event>,
        answer: std::sync::mpsc::SyncSender<Result<(), String>>,
    },
    /// Tear down a framework or mark an agent gone, for `principal`.
    Change {
        principal: Option<String>,
        message: ToMaster,
        answer: std::sync::mpsc::SyncSender<ChangeResult>,
    },
}

/// Who may make the calls that change the cluster.
#[derive(Debug, Clone)]
pub enum WriteAccess {
    /// Nobody: they are answered 403 saying how to allow them.
    Off,
    /// Any caller (a development cluster on loopback).
    Unauthenticated,
    /// Callers that authenticate with these credentials.
    Authenticated(Arc<strata_runtime::http_auth::HttpCredentials>),
}

/// What the operator endpoints need.
#[derive(Debug, Clone)]
pub struct OperatorApi {
    pub api: ApiSender,
    pub snapshots: Snapshots,
    pub authorizer: Authorizer,
    /// The master's flags by name, as it was started.
    pub flags: Arc<Vec<(String, String)>>,
    pub writes: WriteAccess,
}

fn refused(status: u16, message: &str) -> Response {
    Response::error(status, message)
}

impl OperatorApi {
    /// `POST /api/v1`.
    pub fn call(&self, request: &Request) -> Response {
        if request.method != "POST" {
            return refused(405, "the operator API takes POST");
        }
        if let Some(refusal) = strata_runtime::http::refuse_unless_json(request) {
            return refusal;
        }
        let call = match Call::parse(&request.body) {
            Ok(call) => call,
            Err(error) => return refused(error.status(), &error.to_string()),
        };
        match call {
            Call::Read(CallType::Subscribe) => self.subscribe(request),
            Call::Read(kind) => self.read(request, kind),
            Call::Teardown(framework_id) => {
                self.change(request, ToMaster::OperatorTeardown { framework_id })
            }
            Call::MarkAgentGone(agent_id) => {
                self.change(request, ToMaster::OperatorMarkAgentGone { agent_id })
            }
        }
    }

    /// What `principal` may see of a fresh snapshot (the snapshot
    /// itself when the ACLs let everyone see everything).
    fn visible(&self, principal: Option<&str>) -> Option<Arc<State>> {
        let state = self.snapshots.fresh(FRESH_SNAPSHOT_WAIT)?;
        if self.authorizer.allows_everything() {
            return Some(state);
        }
        Some(Arc::new(crate::state::visible_to(
            &state,
            &self.authorizer,
            principal,
        )))
    }

    fn read(&self, request: &Request, kind: CallType) -> Response {
        use strata_api::operator as json;
        let answered = match kind {
            CallType::GetHealth => json::answer(kind, &serde_json::json!({ "healthy": true })),
            CallType::GetVersion => json::answer(kind, &json::get_version()),
            CallType::GetFlags => json::answer(kind, &json::get_flags(&self.flags)),
            _ => {
                let Some(state) = self.visible(request.principal.as_deref()) else {
                    return refused(503, "the master is starting");
                };
                match kind {
                    CallType::GetMetrics => {
                        json::answer(kind, &json::get_metrics(&crate::metrics::metrics(&state)))
                    }
                    CallType::GetState => json::answer(kind, &json::get_state(&state)),
                    CallType::GetAgents => json::answer(kind, &json::get_agents(&state)),
                    CallType::GetFrameworks => json::answer(kind, &json::get_frameworks(&state)),
                    CallType::GetExecutors => json::answer(kind, &json::get_executors(&state)),
                    CallType::GetTasks => json::answer(kind, &json::get_tasks(&state)),
                    CallType::GetRoles => json::answer(kind, &json::get_roles(&state)),
                    _ => json::answer(kind, &json::get_master(&state)),
                }
            }
        };
        match answered {
            Ok(body) => Response::json(body),
            Err(error) => refused(500, &error.to_string()),
        }
    }

    /// The principal a call that changes the cluster acts for, or the
    /// refusal.
    fn writer(&self, request: &Request) -> Result<Option<String>, Response> {
        // A client certificate over HTTPS: an operator's authenticates
        // the call, whatever else the master accepts; any other is
        // refused here rather than taken for an operator.
        if let Some(peer) = &request.peer {
            if !peer.is(Role::Operator) {
                return Err(refused(
                    403,
                    &format!(
                        "operator calls that change the cluster need an operator's certificate; this one is for {peer}"
                    ),
                ));
            }
            let credentials = match &self.writes {
                WriteAccess::Authenticated(credentials) => Some(&**credentials),
                WriteAccess::Off | WriteAccess::Unauthenticated => None,
            };
            return strata_runtime::http_auth::authenticate(credentials, request)
                .map_err(|(status, reason)| refused(status, &reason));
        }
        match &self.writes {
            WriteAccess::Off => Err(refused(
                403,
                "operator calls that change the cluster need an operator's certificate over HTTPS, or credentials when the master has --http-credentials",
            )),
            WriteAccess::Unauthenticated => Ok(request.principal.clone()),
            WriteAccess::Authenticated(credentials) => match credentials.authenticate(request) {
                Ok(Some(principal)) => Ok(Some(principal)),
                Ok(None) => Err(refused(
                    401,
                    "operator calls that change the cluster need credentials (HTTP Basic, a bearer token, or an operator's certificate over HTTPS)",
                )),
                Err(reason) => Err(refused(401, &reason)),
            },
        }
    }

    fn change(&self, request: &Request, message: ToMaster) -> Response {
        let principal = match self.writer(request) {
            Ok(principal) => principal,
            Err(response) => return response,
        };
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let call = OperatorCall::Change {
            principal,
            message,
            answer,
        };
        if let Err(response) = self.api.hand_over(ApiCall::Operator(call)) {
            return response;
        }
        match answered.recv_timeout(crate::api::CALL_TIMEOUT) {
            Ok(Ok(())) => Response::json(Bytes::new()),
            Ok(Err((status, reason))) => refused(status, &reason),
            Err(_) => refused(503, "the master did not answer in time"),
        }
    }

    fn subscribe(&self, request: &Request) -> Response {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return refused(503, "the master cannot stream now");
        };
        let (events, taken) = mpsc::channel(EVENT_BUFFER);
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let call = OperatorCall::Subscribe { events, answer };
        if let Err(response) = self.api.hand_over(ApiCall::Operator(call)) {
            return response;
        }
        match answered.recv_timeout(crate::api::CALL_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return refused(503, &reason),
            Err(_) => return refused(503, "the master did not answer in time"),
        }
        let (records, stream) = mpsc::channel(16);
        runtime.spawn(write_stream(
            taken,
            records,
            self.authorizer.clone(),
            request.principal.clone(),
        ));
        Response::streaming("application/json", stream)
    }
}

/// Whether `principal` may see `event` by the view ACLs; the SUBSCRIBED
/// state cut down to what it may see.
fn visible_event(event: Event, authorizer: &Authorizer, principal: Option<&str>) -> Option<Event> {
    let sees_task = |user: &str| authorizer.may_view_task(principal, user).is_ok();
    let sees_framework = |user: &str| authorizer.may_view_framework(principal, user).is_ok();
    match event {
        Event::Subscribed(state) if !authorizer.allows_everything() => Some(Event::Subscribed(
            Arc::new(crate::state::visible_to(&state, authorizer, principal)),
        )),
        Event::TaskAdded(task) => sees_task(&task.user).then_some(Event::TaskAdded(task)),
        Event::TaskUpdated { ref user, .. } => sees_task(user).then_some(event),
        Event::FrameworkAdded(ref framework)
        | Event::FrameworkUpdated(ref framework)
        | Event::FrameworkRemoved(ref framework) => {
            sees_framework(&framework.user).then_some(event)
        }
        other => Some(other),
    }
}

/// Writes a subscription's events to its answer as RecordIO records
/// until the master or the client goes. The SUBSCRIBED state is
/// serialized on a blocking thread.
async fn write_stream(
    mut events: mpsc::Receiver<Event>,
    records: mpsc::Sender<Bytes>,
    authorizer: Authorizer,
    principal: Option<String>,
) {
    while let Some(event) = events.recv().await {
        let Some(event) = visible_event(event, &authorizer, principal.as_deref()) else {
            continue;
        };
        let record = if matches!(event, Event::Subscribed(_)) {
            match tokio::task::spawn_blocking(move || event.record()).await {
                Ok(record) => record,
                Err(_) => return,
            }
        } else {
            event.record()
        };
        if records.send(Bytes::from(record)).await.is_err() {
            return;
        }
    }
}

/// How a subscription is answered: open, or why not.
type SubscribeAnswer = std::sync::mpsc::SyncSender<Result<(), String>>;

/// The master's operator streams, and the subscriptions waiting for
/// their first state.
#[derive(Debug, Default)]
pub struct OperatorStreams {
    streams: Vec<mpsc::Sender<Event>>,
    waiting: Vec<(mpsc::Sender<Event>, SubscribeAnswer)>,
}

impl OperatorStreams {
    /// Whether any stream is open (events are only made then).
    pub fn any(&self) -> bool {
        !self.streams.is_empty()
    }

    /// Whether subscriptions wait for their first state.
    pub fn waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Takes a subscription, to be opened with the next state; refused
    /// (and answered) beyond [`MAX_SUBSCRIPTIONS`], counting those that
    /// wait, before anything is spent on it.
    pub fn admit(
        &mut self,
        events: mpsc::Sender<Event>,
        answer: SubscribeAnswer,
    ) -> Result<(), String> {
        self.streams.retain(|stream| !stream.is_closed());
        self.waiting.retain(|(stream, _)| !stream.is_closed());
        if self.streams.len() + self.waiting.len() >= MAX_SUBSCRIPTIONS {
            let reason = format!(
                "the master has {MAX_SUBSCRIPTIONS} operator streams open, the most it takes"
            );
            let _ = answer.try_send(Err(reason.clone()));
            return Err(reason);
        }
        self.waiting.push((events, answer));
        Ok(())
    }

    /// Opens every waiting stream with `state`.
    pub fn open_waiting(&mut self, state: &Arc<State>) {
        for (events, answer) in std::mem::take(&mut self.waiting) {
            if events.try_send(Event::Subscribed(state.clone())).is_ok()
                && answer.try_send(Ok(())).is_ok()
            {
                self.streams.push(events);
            }
        }
    }

    /// Sends `event` on every stream; a stream that is gone or full is
    /// closed.
    pub fn send(&mut self, event: &Event) {
        self.streams
            .retain(|stream| stream.try_send(event.clone()).is_ok());
    }
}

/// The operator endpoints in front of `rest`: the v1 API's paths, the v0
/// `/master/state` and `/master/flags`.
pub fn routes(
    operator: OperatorApi,
    rest: impl Fn(&Request) -> Response + Send + Sync + 'static,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    move |request: &Request| match request.path.as_str() {
        path if OPERATOR_PATHS.contains(&path) => operator.call(request),
        "/master/state" | "/master/state.json" | "/state.json" => {
            if request.method == "POST" {
                return refused(405, "these endpoints answer GET and HEAD");
            }
            let Some(state) = operator.visible(request.principal.as_deref()) else {
                return refused(503, "the master is starting");
            };
            match strata_api::operator::state_v0(&state, &operator.flags) {
                Ok(body) => Response::json(body),
                Err(error) => refused(500, &error.to_string()),
            }
        }
        "/master/flags" | "/flags" => {
            match serde_json::to_vec(&strata_api::operator::flags_v0(&operator.flags)) {
                Ok(body) => Response::json(body),
                Err(error) => refused(500, &error.to_string()),
            }
        }
        _ => rest(request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorization::DefaultDecision;

    fn api(writes: WriteAccess) -> OperatorApi {
        let (api, _calls) = crate::api::channel();
        let (_publisher, snapshots) = crate::state::channel();
        OperatorApi {
            api,
            snapshots,
            authorizer: Authorizer::default(),
            flags: Arc::new(vec![]),
            writes,
        }
    }

    fn request(authorization: Option<&str>) -> Request {
        Request {
            method: "POST".into(),
            path: "/api/v1".into(),
            headers: authorization
                .map(|value| vec![("authorization".to_owned(), value.to_owned())])
                .unwrap_or_default(),
            ..Request::default()
        }
    }

    #[test]
    fn changes_need_an_operator_who_may() {
        let off = api(WriteAccess::Off).writer(&request(None)).unwrap_err();
        assert_eq!(off.status, 403);
        assert!(String::from_utf8_lossy(&off.body).contains("--http-credentials"));
        let credentials = strata_runtime::http_auth::HttpCredentials::parse(
            br#"{"credentials": [{"principal": "ops", "secret": "s3cret"}]}"#,
        )
        .unwrap();
        let checked = api(WriteAccess::Authenticated(Arc::new(credentials)));
        assert_eq!(checked.writer(&request(None)).unwrap_err().status, 401);
        assert_eq!(
            checked
                .writer(&request(Some("Bearer wrong")))
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            checked.writer(&request(Some("Bearer s3cret"))).unwrap(),
            Some("ops".to_owned())
        );
        // A call refused before it reaches the master changes nothing.
        let mut call = request(None);
        call.headers
            .push(("content-type".into(), "application/json".into()));
        call.body = Bytes::from_static(
            br#"{"type": "TEARDOWN", "teardown": {"framework_id": {"value": "m-F1"}}}"#,
        );
        assert_eq!(checked.call(&call).status, 401);
    }

    #[test]
    fn events_are_filtered_by_the_view_acls() {
        let acls = r#"{"view_tasks": [{"principals": {"values": ["alice"]}, "users": {"values": ["alice"]}}],
            "view_frameworks": [{"principals": {"values": ["alice"]}, "users": {"values": ["alice"]}}]}"#;
        let authorizer = Authorizer::new(acls.parse().unwrap(), DefaultDecision::Deny);
        let status = strata_protocol::TaskStatus {
            task_id: "t1".parse().unwrap(),
            state: strata_protocol::TaskState::Running,
            source: strata_protocol::Source::Executor,
            reason: None,
            message: String::new(),
            agent_id: None,
            executor_id: None,
            update_id: None,
            timestamp_ms: 0,
            sandbox: None,
        };
        let update = |user: &str| Event::TaskUpdated {
            framework_id: "m-F1".parse().unwrap(),
            status: status.clone(),
            user: user.to_owned(),
        };
        assert!(visible_event(update("alice"), &authorizer, Some("alice")).is_some());
        assert!(visible_event(update("bob"), &authorizer, Some("alice")).is_none());
        assert!(visible_event(update("alice"), &authorizer, None).is_none());
        let agent_removed = Event::AgentRemoved("m-S1".parse().unwrap());
        assert!(visible_event(agent_removed, &authorizer, None).is_some());
    }
}
