//! The HTTP/1.1 server for the operators' endpoints, on hyper.
//!
//! Masters and agents serve HTTP on the TCP port with the number of their
//! QUIC port. A handler is a plain function from a [`Request`] to a
//! [`Response`]; it runs on tokio's blocking pool, never on the thread of
//! the process whose snapshots it serves, so a slow one (a large JSON
//! answer, a file read) cannot stall that process. Nor can it take that
//! thread's core: a handler runs [`HANDLER_NICENESS`] below it in the
//! scheduler's priority (see [`run_below`]), so on a busy machine readers
//! of a large `/state` wait for spare time rather than the master for
//! its core.
//!
//! Everything a client controls is bounded ([`Limits`]): concurrent
//! connections (one more is answered 503 and closed), the request head's
//! size and header count (431), the body's size (413), the time to send a
//! head (which is also how long an idle keep-alive connection stays open)
//! and a body (408), and the time a write may wait for the client to read:
//! a client that never reads its answer loses its connection after
//! [`Limits::write_timeout`] and holds at most one answer meanwhile.
//! Connections are kept alive between requests. Cross-origin reads are
//! allowed only from the origins a server names ([`Cors`]): agents allow
//! their master's web UI, which reads task output from the agents' ports.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tracing::debug;

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most headers one request may carry.
pub const MAX_HEADERS: usize = 64;

/// How long a client has to send its request head; also how long an idle
/// keep-alive connection stays open.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What a server accepts from its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more is answered 503.
    pub max_connections: usize,
    /// Largest request head, in bytes.
    pub max_head_bytes: usize,
    /// Most headers in one request.
    pub max_headers: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Time to send a request head, and an idle connection's lifetime.
    pub head_timeout: Duration,
    /// Time to send a request body.
    pub body_timeout: Duration,
    /// Longest a write may wait for the client to read.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_head_bytes: MAX_HEAD_BYTES,
            max_headers: MAX_HEADERS,
            max_body_bytes: 4 << 20,
            head_timeout: HEAD_TIMEOUT,
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// A request: its method, its path (percent-decoded), its query
/// parameters (decoded, in order), its headers and its body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Header names in lower case, with their values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, read whole (at most [`Limits::max_body_bytes`]).
    pub body: Bytes,
    /// Who sent it, once authenticated (see [`crate::http_auth::guard`]).
    pub principal: Option<String>,
    /// The client certificate it came with over HTTPS, verified against
    /// the cluster's CA.
    pub peer: Option<crate::tls::PeerIdentity>,
}

/// Which other origins' pages may read a server's answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cors {
    /// None: only pages the server itself serves.
    #[default]
    SameOrigin,
    /// Exactly these origins (`http://host:port`).
    Origins(Vec<String>),
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request from
    /// `origin`, if it is allowed.
    fn allow(&self, origin: Option<&str>) -> Option<String> {
        match (self, origin) {
            (Cors::Origins(allowed), Some(origin)) => allowed
                .iter()
                .any(|allowed| allowed == origin)
                .then(|| origin.to_owned()),
            _ => None,
        }
    }
}

impl Request {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// An answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Shared, so one serialized snapshot can answer many clients.
    pub body: Bytes,
    /// Headers besides the content type and length, caching and CORS.
    pub headers: Vec<(&'static str, String)>,
    /// A body that follows `body` as it is produced (an event stream),
    /// sent chunked until the sender closes; dropped when the client
    /// goes, which closes the channel for the sender.
    pub stream: Option<tokio::sync::mpsc::Receiver<Bytes>>,
}

impl Response {
    /// 200 with a JSON body.
    pub fn json(body: impl Into<Bytes>) -> Response {
        Response {
            status: 200,
            content_type: "application/json",
            body: body.into(),
            headers: Vec::new(),
            stream: None,
        }
    }

    /// 200 with a text body of `content_type`.
    pub fn text(content_type: &'static str, body: impl Into<Bytes>) -> Response {
        Response {
            status: 200,
            content_type,
            body: body.into(),
            headers: Vec::new(),
            stream: None,
        }
    }

    /// An error status with a one-line JSON body saying why.
    pub fn error(status: u16, message: &str) -> Response {
        let body = format!("{{\"error\":{}}}\n", json_string(message));
        Response {
            status,
            content_type: "application/json",
            body: body.into(),
            headers: Vec::new(),
            stream: None,
        }
    }
}

impl Response {
    /// 200 with a body of `content_type` that is whatever `stream`
    /// yields, in order, until its sender closes.
    pub fn streaming(
        content_type: &'static str,
        stream: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> Response {
        Response {
            stream: Some(stream),
            ..Response::text(content_type, Bytes::new())
        }
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// The refusal of a v1 API call that is not JSON (415) or asks for
/// answers in another type (406): the v1 APIs speak JSON only.
pub fn refuse_unless_json(request: &Request) -> Option<Response> {
    let content_type = request.header("content-type").unwrap_or("application/json");
    if !content_type.starts_with("application/json") {
        return Some(Response::error(
            415,
            &format!("{content_type} is not supported; calls are application/json"),
        ));
    }
    match request.header("accept") {
        Some(accept) if !accept.contains("application/json") && !accept.contains("*/*") => Some(
            Response::error(406, &format!("answers are application/json, not {accept}")),
        ),
        _ => None,
    }
}

/// The Apache Mesos release whose HTTP APIs Strata's follow: `/version`
/// reports it as `version`, which Mesos client libraries parse as
/// numbers to decide what they may call.
pub const MESOS_COMPATIBLE_VERSION: &str = "1.11.0";

/// The `/version` answer of masters and agents: Mesos's `version` and
/// Strata's own.
pub fn version() -> Response {
    let body = serde_json::json!({
        "version": MESOS_COMPATIBLE_VERSION,
        "strata_version": env!("CARGO_PKG_VERSION"),
    });
    Response::json(body.to_string())
}

/// Serializes each snapshot once, as JSON, for every reader of it: many
/// clients polling one snapshot share one buffer (and one serialization)
/// instead of each holding a copy while its answer is written. It knows
/// the snapshot it serialized last without holding it, so a `/state`
/// read once does not keep that snapshot alive until the next read.
#[derive(Debug)]
pub struct SharedJson<T> {
    latest: std::sync::Mutex<Option<(std::sync::Weak<T>, Bytes)>>,
}

impl<T> Default for SharedJson<T> {
    fn default() -> SharedJson<T> {
        SharedJson {
            latest: std::sync::Mutex::new(None),
        }
    }
}

impl<T: serde::Serialize> SharedJson<T> {
    /// 200 with `snapshot` as JSON, serialized if it is not the snapshot
    /// serialized last. Readers arriving meanwhile wait for that one
    /// serialization rather than each making their own.
    pub fn answer(&self, snapshot: &Arc<T>) -> Response {
        let mut latest = self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A weak reference keeps the allocation, so no later snapshot can
        // have the same address.
        if let Some((serialized, body)) = latest.as_ref()
            && std::ptr::eq(serialized.as_ptr(), Arc::as_ptr(snapshot))
        {
            return Response::json(body.clone());
        }
        match serde_json::to_vec(&**snapshot) {
            Ok(body) => {
                let body = Bytes::from(body);
                *latest = Some((Arc::downgrade(snapshot), body.clone()));
                Response::json(body)
            }
            Err(error) => Response::error(500, &error.to_string()),
        }
    }
}

fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Why a request head was refused: the status and what to say.
type Refusal = (u16, &'static str);

/// Decodes `%XX` escapes (and `+` as a space in queries).
fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, Refusal> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = bytes
                    .get(index + 1..index + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or((400, "bad percent escape"))?;
                decoded.push(hex);
                index += 3;
            }
            b'+' if plus_is_space => {
                decoded.push(b' ');
                index += 1;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).map_err(|_| (400, "the target is not UTF-8"))
}

/// Builds a [`Request`] from a method, a request target and headers.
fn request_from<'a>(
    method: &str,
    target: &str,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<Request, Refusal> {
    if !matches!(method, "GET" | "HEAD" | "POST") {
        return Err((405, "only GET, HEAD and POST are served"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err((400, "the target must be a path"));
    }
    let query = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(key, true)?, percent_decode(value, true)?))
        })
        .collect::<Result<Vec<_>, Refusal>>()?;
    let headers = headers
        .map(|(name, value)| {
            let value = std::str::from_utf8(value).map_err(|_| (400, "a header is not UTF-8"))?;
            Ok((name.to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect::<Result<Vec<_>, Refusal>>()?;
    Ok(Request {
        method: method.to_owned(),
        path: percent_decode(path, false)?,
        query,
        headers,
        body: Bytes::new(),
        principal: None,
        peer: None,
    })
}

/// Parses a complete request head (up to and with the blank line), as
/// the server does before routing: for tests and fuzzing.
pub fn parse_head(head: &[u8]) -> Result<Request, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let status = parsed.parse(head).map_err(|error| match error {
        httparse::Error::TooManyHeaders => (431, "too many headers"),
        _ => (400, "malformed request head"),
    })?;
    if status.is_partial() {
        return Err((400, "the request head is incomplete"));
    }
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err((400, "malformed request line"));
    };
    request_from(
        method,
        target,
        parsed
            .headers
            .iter()
            .map(|header| (header.name, header.value)),
    )
}

/// What every connection of one server shares.
struct Server<H> {
    handler: H,
    cors: Cors,
    limits: Limits,
}

impl<H> Server<H>
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    /// Reads the request's body, runs the handler and builds the answer.
    async fn answer(
        self: Arc<Self>,
        request: hyper::Request<Incoming>,
        peer: Option<crate::tls::PeerIdentity>,
    ) -> hyper::Response<Answer> {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|origin| origin.to_str().ok())
            .map(str::to_owned);
        let allow_origin = self.cors.allow(origin.as_deref());
        let response = match self.read(request).await {
            Ok(mut request) => {
                request.peer = peer;
                let server = self.clone();
                tokio::task::spawn_blocking(move || run_below(|| (server.handler)(&request)))
                    .await
                    .unwrap_or_else(|_| Response::error(500, "the handler failed"))
            }
            Err((status, message)) => Response::error(status, message),
        };
        build(response, allow_origin)
    }

    async fn read(&self, request: hyper::Request<Incoming>) -> Result<Request, Refusal> {
        let (parts, body) = request.into_parts();
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |target| target.as_str());
        let mut request = request_from(
            parts.method.as_str(),
            target,
            parts
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes())),
        )?;
        let announced = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
        let too_large = (413, "the request body is too large");
        if announced.is_some_and(|length| length > self.limits.max_body_bytes as u64) {
            return Err(too_large);
        }
        let collected = tokio::time::timeout(
            self.limits.body_timeout,
            Limited::new(body, self.limits.max_body_bytes).collect(),
        )
        .await
        .map_err(|_| (408, "the request body did not arrive in time"))?;
        request.body = collected
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    too_large
                } else {
                    (400, "the request body could not be read")
                }
            })?
            .to_bytes();
        Ok(request)
    }
}

/// An answer's body: whole, or whole then streamed.
#[derive(Debug)]
pub struct Answer {
    first: Option<Bytes>,
    stream: Option<tokio::sync::mpsc::Receiver<Bytes>>,
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take().filter(|first| !first.is_empty()) {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(first))));
        }
        match self.stream.as_mut() {
            None => std::task::Poll::Ready(None),
            Some(stream) => stream
                .poll_recv(context)
                .map(|next| next.map(|bytes| Ok(hyper::body::Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_none() && self.first.as_ref().is_none_or(Bytes::is_empty)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match (&self.stream, &self.first) {
            (Some(_), _) => hyper::body::SizeHint::default(),
            (None, Some(first)) => hyper::body::SizeHint::with_exact(first.len() as u64),
            (None, None) => hyper::body::SizeHint::with_exact(0),
        }
    }
}

/// The hyper answer for `response`.
fn build(response: Response, allow_origin: Option<String>) -> hyper::Response<Answer> {
    let mut answer = hyper::Response::new(Answer {
        first: Some(response.body),
        stream: response.stream,
    });
    *answer.status_mut() = hyper::StatusCode::from_u16(response.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(response.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(origin) = allow_origin.and_then(|origin| HeaderValue::from_str(&origin).ok()) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    if response.status == 401 {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"strata\""),
        );
    }
    for (name, value) in response.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(name, value);
        }
    }
    answer
}

/// Serves one connection until the client closes it, it idles past the
/// head timeout or a write waits past the write timeout. `peer` is the
/// client certificate's identity, over HTTPS.
async fn serve_connection<S, H>(
    stream: S,
    server: Arc<Server<H>>,
    peer: Option<crate::tls::PeerIdentity>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    let limits = server.limits;
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(limits.write_timeout));
    let io = TokioIo::new(Box::pin(stream));
    let service = hyper::service::service_fn(move |request| {
        let server = server.clone();
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(server.answer(request, peer).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_header_size(limits.max_head_bytes)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true)
        .serve_connection(io, service)
        .await;
    if let Err(error) = served {
        debug!(cause = %error, "http connection ended");
    }
}

/// Answers `status` with a JSON error and closes the connection: for
/// connections refused before HTTP is spoken.
async fn refuse(mut stream: TcpStream, status: &str, message: &str) {
    let body = format!("{{\"error\":{}}}\n", serde_json::Value::from(message));
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// HTTPS on a server's port, beside or instead of plain HTTP.
#[derive(Clone)]
pub struct Https {
    /// The server's TLS configuration: its certificate, and the CA that
    /// client certificates are verified against (see
    /// [`crate::tls::https_server_config`]).
    pub config: Arc<rustls::ServerConfig>,
    /// Refuse plain HTTP: a client that does not start with a TLS
    /// handshake is answered 400 saying to use HTTPS.
    pub only: bool,
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https").field("only", &self.only).finish()
    }
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// How far below the rest of the process (in nice values, 0 to 19) an
/// HTTP handler runs. At 10 a thread has about a tenth of the weight of
/// one at 0 in Linux's scheduler: the process's own threads keep the
/// cores they want, and handlers have what they leave.
pub const HANDLER_NICENESS: i32 = 10;

/// Runs `work` on this thread [`HANDLER_NICENESS`] below the priority it
/// had, then puts the priority back (also when `work` panics). Linux
/// keeps a nice value for each thread, and a process started from the
/// thread inherits it: tokio's blocking pool also launches tasks, so a
/// thread must not stay lowered. Putting a priority back needs the right
/// to raise one (`CAP_SYS_NICE`, or room in `RLIMIT_NICE`): a process
/// without it ([`can_lower_handlers`]) runs `work` as it is. Elsewhere
/// than Linux a priority belongs to the whole process: `work` runs as it
/// is.
pub fn run_below<T>(work: impl FnOnce() -> T) -> T {
    #[cfg(target_os = "linux")]
    if can_lower_handlers() {
        /// Puts the thread's priority back when dropped, after `work` or
        /// while a panic in it unwinds.
        struct Back(rustix::process::Pid, i32);
        impl Drop for Back {
            fn drop(&mut self) {
                let _ = rustix::process::setpriority_process(Some(self.0), self.1);
            }
        }
        let thread = rustix::thread::gettid();
        if let Ok(before) = rustix::process::getpriority_process(Some(thread)) {
            let _ = rustix::process::setpriority_process(
                Some(thread),
                before.saturating_add(HANDLER_NICENESS).min(19),
            );
            let _back = Back(thread, before);
            return work();
        }
    }
    work()
}

/// Whether this process may lower a handler's thread and put it back:
/// found once, by lowering this thread by one and raising it again.
pub fn can_lower_handlers() -> bool {
    static CAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CAN.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            let thread = Some(rustix::thread::gettid());
            let Ok(before) = rustix::process::getpriority_process(thread) else {
                return false;
            };
            if before >= 19 {
                return false;
            }
            rustix::process::setpriority_process(thread, before + 1).is_ok()
                && rustix::process::setpriority_process(thread, before).is_ok()
        }
        #[cfg(not(target_os = "linux"))]
        false
    })
}

/// Serves one accepted connection: HTTPS when it starts a TLS handshake
/// and the server has `https`, plain HTTP otherwise (unless refused).
async fn accepted<H>(stream: TcpStream, server: Arc<Server<H>>, https: Option<Https>)
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    let Some(https) = https else {
        return serve_connection(stream, server, None).await;
    };
    let limits = server.limits;
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.head_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        // Closed, failed or silent before sending anything.
        _ => return,
    }
    if first[0] != TLS_HANDSHAKE {
        if https.only {
            return refuse(
                stream,
                "400 Bad Request",
                "this server speaks HTTPS only: use https:// with the cluster's CA",
            )
            .await;
        }
        return serve_connection(stream, server, None).await;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(https.config);
    let stream = match tokio::time::timeout(limits.head_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            debug!(cause = %error, "https handshake failed");
            return;
        }
        Err(_) => {
            debug!("https handshake did not finish in time");
            return;
        }
    };
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(<[_]>::first)
        .map(crate::tls::PeerIdentity::from_certificate);
    serve_connection(stream, server, peer).await
}

/// Serves `handler` on `listener` with the default [`Limits`], plain HTTP
/// only.
pub async fn serve<H>(listener: TcpListener, cors: Cors, handler: H)
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    serve_with(listener, cors, Limits::default(), None, handler).await
}

/// Serves `handler` on `listener` within `limits`; HTTPS too with
/// `https`.
pub async fn serve_with<H>(
    listener: TcpListener,
    cors: Cors,
    limits: Limits,
    https: Option<Https>,
    handler: H,
) where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    let server = Arc::new(Server {
        handler,
        cors,
        limits,
    });
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    debug!(%peer, "http connection");
                    // Events of a stream go out as they are written, not
                    // held back to fill a segment.
                    let _ = stream.set_nodelay(true);
                    let server = server.clone();
                    let https = https.clone();
                    tokio::spawn(async move {
                        accepted(stream, server, https).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    debug!(%peer, "http connection refused: too many");
                    tokio::spawn(refuse(
                        stream,
                        "503 Service Unavailable",
                        "too many connections; try again",
                    ));
                }
            },
            Err(error) => {
                // Out of file descriptors, most likely: let some close.
                debug!(cause = %error, "http accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn request_heads_parse_and_bad_ones_are_refused() {
        let request =
            parse_head(b"GET /files/read?path=a%20b&offset=10&x HTTP/1.1\r\nHost: h\r\n\r\n")
                .unwrap();
        assert_eq!(request.path, "/files/read");
        assert_eq!(request.param("path"), Some("a b"));
        assert_eq!(request.param("offset"), Some("10"));
        assert_eq!(request.param("x"), Some(""));
        assert_eq!(request.header("host"), Some("h"));
        let check = |head: &[u8], status: u16| {
            assert_eq!(
                parse_head(head).unwrap_err().0,
                status,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        };
        check(b"PUT /state HTTP/1.1\r\n\r\n", 405);
        check(b"GET /state\r\n\r\n", 400);
        check(b"GET state HTTP/1.1\r\n\r\n", 400);
        check(b"GET /a%zz HTTP/1.1\r\n\r\n", 400);
        check(b"GET /a%ff HTTP/1.1\r\n\r\n", 400);
        check(b"GET / HTTP/2\r\n\r\n", 400);
        check(b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n", 400);
        check(b"GET / HTTP/1.1\r\nHost: h\r\n", 400);
        check(b"\xff\xfe", 400);
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        check(many.as_bytes(), 431);
    }

    #[test]
    fn a_snapshot_is_serialized_once_for_all_its_readers() {
        let shared = SharedJson::default();
        let first = Arc::new(vec![1, 2, 3]);
        let (a, b) = (shared.answer(&first), shared.answer(&first));
        assert_eq!(&a.body[..], b"[1,2,3]");
        assert_eq!(a.body.as_ptr(), b.body.as_ptr(), "one buffer for both");
        let second = Arc::new(vec![4]);
        assert_eq!(&shared.answer(&second).body[..], b"[4]");
        // Serialized last, not kept: the reader that dropped it freed it.
        let weak = Arc::downgrade(&second);
        drop(second);
        assert!(weak.upgrade().is_none(), "the last snapshot served is kept");
        assert_eq!(&shared.answer(&Arc::new(vec![5])).body[..], b"[5]");
    }

    #[test]
    fn error_bodies_are_json() {
        let response = Response::error(404, "no \"such\" path\n");
        assert_eq!(
            String::from_utf8(response.body.to_vec()).unwrap(),
            "{\"error\":\"no \\\"such\\\" path\\u000a\"}\n"
        );
    }

    async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        // A reset after the answer (the server closing with unread
        // input) still leaves what was read.
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Serves a handler that answers with the path, or with the body's
    /// length for POST, or with `big` bytes for `/big`.
    async fn server(limits: Limits, big: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cors = Cors::Origins(vec!["http://127.0.0.1:5050".into()]);
        tokio::spawn(serve_with(
            listener,
            cors,
            limits,
            None,
            move |request: &Request| match (request.method.as_str(), request.path.as_str()) {
                ("POST", _) => Response::text("text/plain", request.body.len().to_string()),
                (_, "/big") => Response::text("text/plain", vec![b'x'; big]),
                _ => Response::text("text/plain", request.path.clone())
                    .with_header("x-strata", "yes"),
            },
        ));
        addr
    }

    /// A handler runs lowered in priority, below the thread that serves
    /// the connection, and the priority it had comes back after, also
    /// after a panic; a process that could not put it back lowers none.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn handlers_run_below_the_process() {
        let ours = rustix::process::getpriority_process(None).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_with(
            listener,
            Cors::SameOrigin,
            Limits::default(),
            None,
            |_: &Request| {
                let thread = Some(rustix::thread::gettid());
                let nice = rustix::process::getpriority_process(thread).unwrap();
                Response::text("text/plain", nice.to_string())
            },
        ));
        let got = exchange(addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        if !can_lower_handlers() {
            // A process that could not put a priority back lowers none.
            assert!(got.ends_with(&format!("\r\n\r\n{ours}")), "{got}");
            return;
        }
        let expected = (ours + HANDLER_NICENESS).min(19);
        assert!(got.ends_with(&format!("\r\n\r\n{expected}")), "{got}");

        let before = rustix::process::getpriority_process(None).unwrap();
        let inside = run_below(|| rustix::process::getpriority_process(None).unwrap());
        assert_eq!(inside, (before + HANDLER_NICENESS).min(19));
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), before);
        // A handler that panics leaves no lowered thread behind.
        let panicked = std::panic::catch_unwind(|| run_below(|| panic!("a handler's bug")));
        assert!(panicked.is_err());
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), before);
    }

    #[tokio::test]
    async fn served_over_tcp_within_limits() {
        let limits = Limits {
            max_body_bytes: 1000,
            ..Limits::default()
        };
        let addr = server(limits, 0).await;
        let got = exchange(
            addr,
            b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("x-strata: yes\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\n/hello"), "{got}");
        let got = exchange(addr, b"HEAD /hello HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(
            got.contains("content-length: 6") && got.ends_with("\r\n\r\n"),
            "{got}"
        );
        let got = exchange(
            addr,
            b"GET /a HTTP/1.1\r\nOrigin: http://127.0.0.1:5050\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            got.contains("access-control-allow-origin: http://127.0.0.1:5050\r\n"),
            "{got}"
        );
        let got = exchange(
            addr,
            b"GET /a HTTP/1.1\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(!got.contains("access-control-allow-origin"), "{got}");
        let got = exchange(addr, b"BREW /pot HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 405"), "{got}");
        let endless = vec![b'a'; MAX_HEAD_BYTES + 100];
        let got = exchange(addr, &endless).await;
        assert!(got.starts_with("HTTP/1.1 4"), "{got}");
        let mut long_head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long_head.extend(vec![b'a'; MAX_HEAD_BYTES + 100]);
        long_head.extend_from_slice(b"\r\n\r\n");
        let got = exchange(addr, &long_head).await;
        assert!(got.starts_with("HTTP/1.1 431"), "{got}");
        // Bodies: read whole, within the limit.
        let got = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        assert!(got.ends_with("\r\n\r\n5"), "{got}");
        let got = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        assert!(got.ends_with("\r\n\r\n5"), "{got}");
        let got = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nContent-Length: 1001\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 413"), "{got}");
        let mut chunked =
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                .to_vec();
        for _ in 0..3 {
            chunked.extend_from_slice(b"1f4\r\n");
            chunked.extend(vec![b'a'; 500]);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let got = exchange(addr, &chunked).await;
        assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    }

    #[tokio::test]
    async fn answers_stream_chunked_until_the_sender_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (senders, mut made) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(serve(listener, Cors::SameOrigin, move |_: &Request| {
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            let _ = senders.send(sender);
            Response::streaming("application/json", receiver).with_header("mesos-stream-id", "s1")
        }));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let sender = made.recv().await.unwrap();
        sender.send(Bytes::from_static(b"first")).await.unwrap();
        sender.send(Bytes::from_static(b"second")).await.unwrap();
        drop(sender);
        let mut answer = Vec::new();
        let mut buffer = [0; 1024];
        while !answer.ends_with(b"0\r\n\r\n") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "{}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buffer[..read]);
        }
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains("transfer-encoding: chunked\r\n"),
            "{answer}"
        );
        assert!(answer.contains("mesos-stream-id: s1\r\n"), "{answer}");
        assert!(
            answer.ends_with("\r\n\r\n5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n"),
            "{answer}"
        );
        // A client that goes away closes the stream for its sender.
        stream
            .write_all(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let sender = made.recv().await.unwrap();
        sender.send(Bytes::from_static(b"hello")).await.unwrap();
        drop(stream);
        tokio::time::timeout(Duration::from_secs(30), sender.closed())
            .await
            .expect("the stream closes when its client goes");
    }

    #[tokio::test]
    async fn connections_are_kept_alive() {
        let addr = server(Limits::default(), 0).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut answers = String::new();
        for path in ["/one", "/two"] {
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut buffer = [0; 4096];
            // Each answer is small: it arrives in one read or a few.
            while !answers.ends_with(path) {
                let read = stream.read(&mut buffer).await.unwrap();
                assert!(read > 0, "closed after {answers}");
                answers.push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        }
        assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 2, "{answers}");
    }

    #[tokio::test]
    async fn idle_and_unread_connections_are_closed_and_free_their_place() {
        let limits = Limits {
            max_connections: 1,
            head_timeout: Duration::from_millis(200),
            write_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let addr = server(limits, 64 << 20).await;
        // An idle connection holds the only place: another is refused.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let got = exchange(addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 503"), "{got}");
        // The idle one is closed after the head timeout.
        let mut nothing = Vec::new();
        let _ = idle.read_to_end(&mut nothing).await;
        assert!(nothing.is_empty());
        drop(idle);
        // A client that asks for a large answer and never reads it holds
        // its place only until a write has waited the write timeout.
        let mut unread = TcpStream::connect(addr).await.unwrap();
        unread
            .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = exchange(addr, b"GET /after HTTP/1.1\r\nConnection: close\r\n\r\n").await;
            if got.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(got.starts_with("HTTP/1.1 503"), "{got}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the unread connection kept its place"
            );
        }
        drop(unread);
    }

    /// Serves the name of the client certificate a request came with
    /// (`-` without one), over HTTPS by `server`'s certificate and plain
    /// HTTP unless `only`.
    async fn https_server(server: &crate::tls::TlsMaterial, only: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let https = Https {
            config: crate::tls::https_server_config(server).unwrap(),
            only,
        };
        tokio::spawn(serve_with(
            listener,
            Cors::SameOrigin,
            Limits::default(),
            Some(https),
            |request: &Request| {
                let name = request.peer.as_ref().map_or("-", |peer| peer.name.as_str());
                Response::text("text/plain", name.to_owned())
            },
        ));
        addr
    }

    /// A request over TLS trusting `roots`, presenting `identity` if
    /// given; the answer, or the error that ended the handshake.
    async fn exchange_tls(
        addr: SocketAddr,
        roots: &crate::tls::TlsMaterial,
        identity: Option<&crate::tls::TlsMaterial>,
    ) -> std::io::Result<String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut store = rustls::RootCertStore::empty();
        for root in roots.roots() {
            store.add(root.clone()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(store);
        let config = match identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain().to_vec(), identity.key().clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut stream = connector.connect(name, tcp).await?;
        stream
            .write_all(b"GET /who HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    #[tokio::test]
    async fn https_and_http_share_a_port_and_client_certificates_name_the_peer() {
        use crate::tls::{CertificateAuthority, Role};
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let hosts = ["127.0.0.1".to_owned()];
        let master = ca
            .issue_serving(Role::Master, "master", DAY, &hosts)
            .unwrap();
        let alice = ca.issue(Role::Framework, "alice").unwrap();
        let stranger = CertificateAuthority::generate("another CA")
            .unwrap()
            .issue(Role::Framework, "alice")
            .unwrap();

        let addr = https_server(&master, false).await;
        let answer = exchange_tls(addr, &master, Some(&alice)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nalice"), "{answer}");
        let answer = exchange_tls(addr, &master, None).await.unwrap();
        assert!(answer.ends_with("\r\n\r\n-"), "{answer}");
        let plain = exchange(addr, b"GET /who HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(plain.ends_with("\r\n\r\n-"), "{plain}");
        // A certificate the cluster's CA did not issue ends the handshake.
        assert!(exchange_tls(addr, &master, Some(&stranger)).await.is_err());
        // A certificate that does not name the address fails the client's
        // verification.
        let unnamed = https_server(&ca.issue(Role::Master, "master").unwrap(), false).await;
        assert!(exchange_tls(unnamed, &master, None).await.is_err());

        let only = https_server(&master, true).await;
        let refused = exchange(only, b"GET /who HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
        assert!(refused.contains("HTTPS only"), "{refused}");
        let answer = exchange_tls(only, &master, Some(&alice)).await.unwrap();
        assert!(answer.ends_with("\r\n\r\nalice"), "{answer}");
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);
}
