//! Who is asking over HTTP: principals from a Mesos-style credentials
//! file, presented as HTTP Basic (`principal:secret`) or as a bearer
//! token (the secret alone), or from a client certificate over HTTPS (a
//! framework's or an operator's, issued by the cluster's CA; its common
//! name is the principal, as over QUIC).
//!
//! Endpoints that reveal task data (`/state`, sandbox files, usage) are
//! served only to an authenticated principal when the operator asks for
//! it (`--authenticate-http-readonly`, as Apache Mesos), so that the ACLs
//! can decide by principal. [`guard`] wraps any handler: it answers 401
//! with a Basic challenge to a request without valid credentials for a
//! guarded path, and puts the principal it found in
//! [`crate::http::Request::principal`] for the handler (the v1 HTTP APIs
//! use it the same way).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;

use crate::http::{Request, Response};
use crate::tls::Role;

/// Largest credentials file read.
pub const MAX_CREDENTIALS_BYTES: u64 = 1 << 20;

/// Why a credentials file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the credentials file {path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    credentials: Vec<Credential>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    principal: String,
    secret: String,
}

/// The principals an HTTP server knows, with their secrets.
#[derive(Clone, Default)]
pub struct HttpCredentials {
    secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for HttpCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCredentials")
            .field("principals", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl HttpCredentials {
    /// Reads Apache Mesos's credentials JSON:
    /// `{"credentials": [{"principal": "ops", "secret": "..."}]}`.
    pub fn load(path: &Path) -> Result<HttpCredentials, CredentialsError> {
        let bytes =
            crate::durable::read_bounded(path, MAX_CREDENTIALS_BYTES).map_err(|source| {
                CredentialsError::Read {
                    path: path.to_owned(),
                    source,
                }
            })?;
        HttpCredentials::parse(&bytes).map_err(|reason| CredentialsError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses the credentials JSON.
    pub fn parse(bytes: &[u8]) -> Result<HttpCredentials, String> {
        let file: File = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        let mut secrets = BTreeMap::new();
        for credential in file.credentials {
            if credential.principal.is_empty() || credential.secret.is_empty() {
                return Err("a credential needs a principal and a secret".into());
            }
            if credential.principal.contains(':') {
                return Err(format!(
                    "principal {:?} contains ':', which HTTP Basic cannot carry",
                    credential.principal
                ));
            }
            if secrets
                .insert(credential.principal.clone(), credential.secret)
                .is_some()
            {
                return Err(format!(
                    "principal {:?} appears twice",
                    credential.principal
                ));
            }
        }
        Ok(HttpCredentials { secrets })
    }

    /// The principal `request` authenticates as: `Ok(None)` when it
    /// presents nothing, an error naming what is wrong when it presents
    /// something invalid.
    pub fn authenticate(&self, request: &Request) -> Result<Option<String>, String> {
        let Some(header) = request.header("authorization") else {
            return Ok(None);
        };
        let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or("the Basic credentials are not base64 of principal:secret")?;
            let (principal, secret) = decoded
                .split_once(':')
                .ok_or("the Basic credentials are not principal:secret")?;
            match self.secrets.get(principal) {
                Some(known) if same(known, secret) => Ok(Some(principal.to_owned())),
                _ => Err("unknown principal or wrong secret".into()),
            }
        } else if scheme.eq_ignore_ascii_case("bearer") {
            self.secrets
                .iter()
                .find(|(_, secret)| same(secret, value))
                .map(|(principal, _)| Some(principal.clone()))
                .ok_or_else(|| "unknown bearer token".into())
        } else {
            Err(format!(
                "unsupported authorization scheme {scheme:?}; use Basic or Bearer"
            ))
        }
    }
}

/// Compares secrets in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The roles whose certificates authenticate HTTP callers: their names
/// are principals (a framework's, an operator's). Other certificates
/// (a node's, an executor's) name no principal over HTTP.
pub const PRINCIPAL_ROLES: [Role; 2] = [Role::Framework, Role::Operator];

/// Why a request was refused authentication: the status and the reason.
pub type Refusal = (u16, String);

/// The principal `request` authenticates as: its client certificate's
/// name (a framework's or an operator's certificate, verified during the
/// TLS handshake), else the HTTP credentials it presents when the server
/// has `credentials`. `Ok(None)` when it presents neither; a refusal
/// naming what is wrong when what it presents is invalid, when its
/// credentials name another principal than its certificate, or when its
/// certificate is one that names no principal and it has no credentials.
pub fn authenticate(
    credentials: Option<&HttpCredentials>,
    request: &Request,
) -> Result<Option<String>, Refusal> {
    let from_credentials = || match credentials {
        Some(credentials) => credentials
            .authenticate(request)
            .map_err(|reason| (401, reason)),
        None => Ok(None),
    };
    let Some(peer) = &request.peer else {
        return from_credentials();
    };
    if !PRINCIPAL_ROLES.iter().any(|role| peer.is(*role)) {
        return match from_credentials()? {
            Some(principal) => Ok(Some(principal)),
            None if credentials.is_none() => Ok(None),
            None => Err((
                403,
                format!(
                    "the client certificate is for {peer}, which names no principal over HTTP; use a framework's or an operator's certificate, or credentials"
                ),
            )),
        };
    }
    match from_credentials()? {
        Some(principal) if principal != peer.name => Err((
            401,
            format!(
                "the client certificate is for principal {:?} but the credentials for {principal:?}",
                peer.name
            ),
        )),
        _ => Ok(Some(peer.name.clone())),
    }
}

/// `handler`, with every path but those in `public` served only to
/// authenticated principals: those with a framework's or an operator's
/// client certificate, and those `credentials` authenticate. The
/// principal is in `request.principal`. Without credentials (`None`),
/// everything is served, a request's credentials are ignored, and a
/// client certificate still names the principal.
pub fn guard<H>(
    credentials: Option<Arc<HttpCredentials>>,
    public: &'static [&'static str],
    handler: H,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static
where
    H: Fn(&Request) -> Response + Send + Sync + 'static,
{
    move |request: &Request| {
        let open = credentials.is_none() || public.contains(&request.path.as_str());
        match authenticate(credentials.as_deref(), request) {
            Ok(Some(principal)) => {
                let mut request = request.clone();
                request.principal = Some(principal);
                handler(&request)
            }
            Ok(None) if open => handler(request),
            Ok(None) => Response::error(
                401,
                "this endpoint needs credentials (HTTP Basic, a bearer token, or a client certificate over HTTPS)",
            ),
            Err((status, reason)) if !open || status != 403 => Response::error(status, &reason),
            Err(_) => handler(request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: Option<&str>, path: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            query: vec![],
            headers: authorization
                .map(|value| vec![("authorization".to_owned(), value.to_owned())])
                .unwrap_or_default(),
            ..Request::default()
        }
    }

    #[test]
    fn principals_authenticate_by_basic_or_bearer() {
        let credentials = HttpCredentials::parse(
            br#"{"credentials": [{"principal": "ops", "secret": "s3cret"}]}"#,
        )
        .unwrap();
        let basic = |text: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(text)
            )
        };
        let check = |header: Option<&str>, expected: Result<Option<&str>, &str>| {
            let got = credentials.authenticate(&request(header, "/state"));
            match expected {
                Ok(principal) => assert_eq!(got, Ok(principal.map(str::to_owned)), "{header:?}"),
                Err(part) => assert!(
                    got.as_ref().is_err_and(|reason| reason.contains(part)),
                    "{header:?}: {got:?}"
                ),
            }
        };
        check(None, Ok(None));
        check(Some(&basic("ops:s3cret")), Ok(Some("ops")));
        check(Some("Bearer s3cret"), Ok(Some("ops")));
        check(Some(&basic("ops:wrong")), Err("wrong secret"));
        check(Some(&basic("nobody:s3cret")), Err("unknown principal"));
        check(Some("Bearer nope"), Err("unknown bearer"));
        check(Some("Basic !!!"), Err("base64"));
        check(Some("Digest x"), Err("unsupported"));

        let guarded = guard(
            Some(Arc::new(credentials)),
            &["/health"],
            |request: &Request| {
                Response::text("text/plain", request.principal.clone().unwrap_or_default())
            },
        );
        assert_eq!(guarded(&request(None, "/state")).status, 401);
        assert_eq!(guarded(&request(None, "/health")).status, 200);
        let answer = guarded(&request(Some("Bearer s3cret"), "/state"));
        assert_eq!((answer.status, &answer.body[..]), (200, &b"ops"[..]));
        let open = guard(None, &[], |_: &Request| Response::text("text/plain", "ok"));
        assert_eq!(open(&request(None, "/state")).status, 200);
    }

    #[test]
    fn framework_and_operator_certificates_name_principals() {
        let credentials = HttpCredentials::parse(
            br#"{"credentials": [{"principal": "ops", "secret": "s3cret"}]}"#,
        )
        .unwrap();
        let with = |role: Role, name: &str, authorization: Option<&str>, path: &str| Request {
            peer: Some(crate::tls::PeerIdentity::simulated(Some(role), name)),
            ..request(authorization, path)
        };
        let check = |credentials: Option<&HttpCredentials>, request: &Request| {
            authenticate(credentials, request)
        };
        for role in PRINCIPAL_ROLES {
            assert_eq!(
                check(Some(&credentials), &with(role, "alice", None, "/state")),
                Ok(Some("alice".to_owned()))
            );
            assert_eq!(
                check(None, &with(role, "alice", None, "/state")),
                Ok(Some("alice".to_owned()))
            );
        }
        // Credentials for the same principal agree; for another they do not.
        let ops = with(Role::Operator, "ops", Some("Bearer s3cret"), "/state");
        assert_eq!(check(Some(&credentials), &ops), Ok(Some("ops".to_owned())));
        let (status, reason) = check(
            Some(&credentials),
            &with(Role::Framework, "alice", Some("Bearer s3cret"), "/state"),
        )
        .unwrap_err();
        assert_eq!(status, 401);
        assert!(
            reason.contains("\"alice\" but the credentials for \"ops\""),
            "{reason}"
        );
        // A node's certificate names nobody: refused where authentication
        // is needed, anonymous where it is not, and its credentials count.
        let agent = with(Role::Agent, "agent-1", None, "/state");
        let (status, reason) = check(Some(&credentials), &agent).unwrap_err();
        assert_eq!(status, 403);
        assert!(reason.contains("agent agent-1"), "{reason}");
        assert_eq!(check(None, &agent), Ok(None));
        assert_eq!(
            check(
                Some(&credentials),
                &with(Role::Agent, "agent-1", Some("Bearer s3cret"), "/state")
            ),
            Ok(Some("ops".to_owned()))
        );

        let guarded = guard(
            Some(Arc::new(credentials)),
            &["/health"],
            |request: &Request| {
                Response::text("text/plain", request.principal.clone().unwrap_or_default())
            },
        );
        let answer = guarded(&with(Role::Framework, "alice", None, "/state"));
        assert_eq!((answer.status, &answer.body[..]), (200, &b"alice"[..]));
        assert_eq!(guarded(&agent).status, 403);
        let public = guarded(&with(Role::Agent, "agent-1", None, "/health"));
        assert_eq!((public.status, &public.body[..]), (200, &b""[..]));
        // Without credentials, a certificate still names the principal.
        let open = guard(None, &[], |request: &Request| {
            Response::text("text/plain", request.principal.clone().unwrap_or_default())
        });
        let answer = open(&with(Role::Operator, "ops", None, "/state"));
        assert_eq!((answer.status, &answer.body[..]), (200, &b"ops"[..]));
    }

    #[test]
    fn bad_files_are_refused_saying_why() {
        for (text, part) in [
            (
                r#"{"credentials": [{"principal": "a", "secret": ""}]}"#,
                "needs a principal",
            ),
            (
                r#"{"credentials": [{"principal": "a:b", "secret": "x"}]}"#,
                "':'",
            ),
            (
                r#"{"credentials": [{"principal": "a", "secret": "x"}, {"principal": "a", "secret": "y"}]}"#,
                "twice",
            ),
            (r#"{"credential": []}"#, "unknown field"),
            ("not json", "expected"),
        ] {
            let error = HttpCredentials::parse(text.as_bytes()).unwrap_err();
            assert!(error.contains(part), "{text}: {error}");
        }
    }
}
