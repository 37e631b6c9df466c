//! A small HTTP/1.1 server for the operators' endpoints.
//!
//! Masters and agents answer `GET` (and `HEAD`) on the TCP port with the
//! number of their QUIC port. The endpoints serve snapshots, so a handler
//! is a plain function from a [`Request`] to a [`Response`]; each
//! connection carries one request and is closed after the answer. What a
//! client sends is bounded: the request head must arrive within
//! [`HEAD_TIMEOUT`] and fit in [`MAX_HEAD_BYTES`]; anything else gets a
//! 4xx answer and the connection is closed. Request bodies are not read.
//! Handlers run on tokio's blocking pool, never on the thread of the
//! process whose snapshots they serve, so a slow one (a large JSON
//! answer, a file read) cannot stall it. Cross-origin reads are allowed
//! only from the origins a server names ([`Cors`]): agents allow their
//! master's web UI, which reads task output from the agents' ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A request: its method, its path (percent-decoded) and its query
/// parameters (decoded, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Header names in lower case, with their values, in order.
    pub headers: Vec<(String, String)>,
    /// Who sent it, once authenticated (see [`crate::http_auth::guard`]).
    pub principal: Option<String>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    /// 200 with a JSON body.
    pub fn json(body: Vec<u8>) -> Response {
        Response {
            status: 200,
            content_type: "application/json",
            body,
        }
    }

    /// 200 with a text body of `content_type`.
    pub fn text(content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    /// An error status with a one-line JSON body saying why.
    pub fn error(status: u16, message: &str) -> Response {
        let body = format!("{{\"error\":{}}}\n", json_string(message));
        Response {
            status,
            content_type: "application/json",
            body: body.into_bytes(),
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

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
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

/// Parses a request head (everything before the blank line).
pub fn parse_head(head: &[u8]) -> Result<Request, (u16, &'static str)> {
    let text = std::str::from_utf8(head).map_err(|_| (400, "the request is not UTF-8"))?;
    let line = text.lines().next().ok_or((400, "empty request"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((400, "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err((400, "only HTTP/1.x is served"));
    }
    if method != "GET" && method != "HEAD" {
        return Err((405, "only GET and HEAD are served"));
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
    let headers = text
        .lines()
        .skip(1)
        .map(|line| {
            let (name, value) = line.split_once(':').ok_or((400, "malformed header line"))?;
            Ok((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect::<Result<Vec<_>, Refusal>>()?;
    Ok(Request {
        method: method.to_owned(),
        path: percent_decode(path, false)?,
        query,
        headers,
        principal: None,
    })
}

/// Reads one request head from `stream`.
async fn read_head(stream: &mut TcpStream) -> Result<Request, (u16, &'static str)> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = head.windows(4).position(|window| window == b"\r\n\r\n") {
            return parse_head(&head[..end]);
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err((413, "the request head is too large"));
        }
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|_| (400, "the connection failed"))?;
        if read == 0 {
            return Err((400, "the request ended early"));
        }
        head.extend_from_slice(&chunk[..read]);
    }
}

async fn answer(
    stream: &mut TcpStream,
    response: &Response,
    head_only: bool,
    allow_origin: Option<String>,
) {
    let cors = allow_origin
        .map(|origin| format!("Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"))
        .unwrap_or_default();
    let challenge = if response.status == 401 {
        "WWW-Authenticate: Basic realm=\"strata\"\r\n"
    } else {
        ""
    };
    let header = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{cors}{challenge}Connection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    let _ = stream.write_all(header.as_bytes()).await;
    if !head_only {
        let _ = stream.write_all(&response.body).await;
    }
    let _ = stream.shutdown().await;
}

async fn serve_connection<H>(mut stream: TcpStream, cors: Arc<Cors>, handler: Arc<H>)
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await;
    let (response, head_only, origin) = match head {
        Err(_) => (
            Response::error(408, "the request head did not arrive in time"),
            false,
            None,
        ),
        Ok(Err((status, message))) => (Response::error(status, message), false, None),
        Ok(Ok(request)) => {
            let head_only = request.method == "HEAD";
            let origin = request.header("origin").map(str::to_owned);
            let response = tokio::task::spawn_blocking(move || handler(&request))
                .await
                .unwrap_or_else(|_| Response::error(500, "the handler failed"));
            (response, head_only, origin)
        }
    };
    let allow_origin = cors.allow(origin.as_deref());
    answer(&mut stream, &response, head_only, allow_origin).await;
}

/// Serves `handler` on `listener` until the task is dropped, letting
/// pages of the origins `cors` names read the answers.
pub async fn serve<H>(listener: TcpListener, cors: Cors, handler: H)
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let cors = Arc::new(cors);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                debug!(%peer, "http connection");
                tokio::spawn(serve_connection(stream, cors.clone(), handler.clone()));
            }
            Err(error) => {
                // Out of descriptors and the like: wait a moment, go on.
                debug!(cause = %error, "http accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Binds the TCP side of `addr` (the port a node's QUIC uses).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_parse_and_bad_ones_are_refused() {
        let request =
            parse_head(b"GET /files/read?path=a%20b&offset=10&x HTTP/1.1\r\nHost: h").unwrap();
        assert_eq!(request.path, "/files/read");
        assert_eq!(request.param("path"), Some("a b"));
        assert_eq!(request.param("offset"), Some("10"));
        assert_eq!(request.param("x"), Some(""));
        let check = |head: &[u8], status: u16| {
            assert_eq!(
                parse_head(head).unwrap_err().0,
                status,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        };
        check(b"POST /state HTTP/1.1", 405);
        check(b"GET /state", 400);
        check(b"GET state HTTP/1.1", 400);
        check(b"GET /a%zz HTTP/1.1", 400);
        check(b"GET /a%ff HTTP/1.1", 400);
        check(b"GET / HTTP/2", 400);
        check(b"\xff\xfe", 400);
    }

    #[test]
    fn error_bodies_are_json() {
        let response = Response::error(404, "no \"such\" path\n");
        assert_eq!(
            String::from_utf8(response.body).unwrap(),
            "{\"error\":\"no \\\"such\\\" path\\u000a\"}\n"
        );
    }

    async fn exchange(addr: SocketAddr, bytes: Vec<u8>) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn served_over_tcp_within_limits() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cors = Cors::Origins(vec!["http://127.0.0.1:5050".into()]);
        let server = tokio::spawn(serve(listener, cors, |request: &Request| {
            Response::text("text/plain", request.path.clone())
        }));
        let got = exchange(addr, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\n/hello"), "{got}");
        let got = exchange(addr, b"HEAD /hello HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(
            got.contains("Content-Length: 6") && got.ends_with("\r\n\r\n"),
            "{got}"
        );
        // Cross-origin reads only from the named origin.
        let got = exchange(
            addr,
            b"GET /a HTTP/1.1\r\nOrigin: http://127.0.0.1:5050\r\n\r\n".to_vec(),
        )
        .await;
        assert!(
            got.contains("Access-Control-Allow-Origin: http://127.0.0.1:5050\r\n"),
            "{got}"
        );
        let got = exchange(
            addr,
            b"GET /a HTTP/1.1\r\nOrigin: http://evil.example\r\n\r\n".to_vec(),
        )
        .await;
        assert!(!got.contains("Access-Control-Allow-Origin"), "{got}");
        let got = exchange(addr, b"BREW /pot HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(got.starts_with("HTTP/1.1 405"), "{got}");
        // A head that never ends is cut off at the limit.
        let endless = vec![b'a'; MAX_HEAD_BYTES + 100];
        let got = exchange(addr, endless).await;
        assert!(got.starts_with("HTTP/1.1 413"), "{got}");
        server.abort();
    }
}
