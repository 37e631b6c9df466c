//! A Docker Registry HTTP API v2 client: manifests and blobs, anonymous
//! or with the bearer tokens a registry's `WWW-Authenticate` challenge
//! points to. Registries on loopback are spoken to over plain HTTP;
//! others over HTTPS, verified with the host's CA bundle.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use super::reference::Reference;

/// What a manifest request accepts: OCI and Docker manifests and
/// indexes (manifest lists).
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// The most a manifest, an index or a token answer may be.
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

/// Where the host keeps its CA bundle (Debian's).
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A registry client, shared by an agent's pulls.
#[derive(Debug)]
pub struct Registry {
    plain: ureq::Agent,
    tls: Option<ureq::Agent>,
    /// Why HTTPS cannot be spoken, when it cannot.
    tls_error: Option<String>,
    /// Bearer tokens by registry and repository.
    tokens: Mutex<BTreeMap<(String, String), String>>,
}

fn config() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(30 * 60)))
        .max_redirects(5)
        .user_agent("strata-agent")
}

impl Registry {
    /// A client trusting the CAs in `ca_bundle` (PEM) for HTTPS.
    pub fn new(ca_bundle: &Path) -> Registry {
        let (tls, tls_error) = match https_agent(ca_bundle) {
            Ok(agent) => (Some(agent), None),
            Err(error) => (None, Some(error)),
        };
        Registry {
            plain: config().build().into(),
            tls,
            tls_error,
            tokens: Mutex::default(),
        }
    }

    fn base(&self, reference: &Reference) -> Result<(String, &ureq::Agent), String> {
        if reference.on_loopback() {
            return Ok((format!("http://{}", reference.api_host()), &self.plain));
        }
        match &self.tls {
            Some(agent) => Ok((format!("https://{}", reference.api_host()), agent)),
            None => Err(format!(
                "cannot speak HTTPS to {}: {}",
                reference.registry,
                self.tls_error.as_deref().unwrap_or("no CA bundle")
            )),
        }
    }

    /// Manifest or index `which` (a tag or a digest) of `reference`'s
    /// repository, and its media type.
    pub fn manifest(
        &self,
        reference: &Reference,
        which: &str,
    ) -> Result<(Vec<u8>, String), String> {
        let path = format!("/v2/{}/manifests/{which}", reference.repository);
        let mut response = self.get(reference, &path, Some(MANIFEST_TYPES))?;
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT_BYTES)
            .read_to_vec()
            .map_err(|e| format!("cannot read the manifest of {reference}: {e}"))?;
        Ok((body, media_type))
    }

    /// Blob `digest` of `reference`'s repository, to read.
    pub fn blob(&self, reference: &Reference, digest: &str) -> Result<impl Read + use<>, String> {
        let path = format!("/v2/{}/blobs/{digest}", reference.repository);
        let response = self.get(reference, &path, None)?;
        Ok(response.into_body().into_reader())
    }

    /// GETs `path`, answering one bearer challenge; an error for anything
    /// but 200.
    fn get(
        &self,
        reference: &Reference,
        path: &str,
        accept: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, String> {
        let (base, agent) = self.base(reference)?;
        let url = format!("{base}{path}");
        let key = (reference.registry.clone(), reference.repository.clone());
        let mut token = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        for attempt in 0..2 {
            let mut request = agent.get(&url);
            if let Some(accept) = accept {
                request = request.header("Accept", accept);
            }
            if let Some(token) = &token {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            let response = request
                .call()
                .map_err(|e| format!("registry {} unreachable: {e}", reference.registry))?;
            match response.status().as_u16() {
                200 => return Ok(response),
                401 if attempt == 0 => {
                    let challenge = response
                        .headers()
                        .get("www-authenticate")
                        .and_then(|value| value.to_str().ok())
                        .ok_or_else(|| {
                            format!(
                                "registry {} refused {path} with no challenge",
                                reference.registry
                            )
                        })?
                        .to_owned();
                    let fresh = self.token(agent, &challenge, reference)?;
                    self.tokens
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(key.clone(), fresh.clone());
                    token = Some(fresh);
                }
                404 => return Err(format!("{reference}: not found in its registry ({path})")),
                status => {
                    return Err(format!(
                        "registry {} answered {status} to {path}",
                        reference.registry
                    ));
                }
            }
        }
        Err(format!(
            "registry {} refused the token it issued for {path}",
            reference.registry
        ))
    }

    /// A token for `challenge` (`Bearer realm="…",service="…",scope="…"`).
    fn token(
        &self,
        agent: &ureq::Agent,
        challenge: &str,
        reference: &Reference,
    ) -> Result<String, String> {
        let parameters = parse_challenge(challenge).ok_or_else(|| {
            format!(
                "registry {} asks for {challenge:?}, not a bearer token",
                reference.registry
            )
        })?;
        let realm = parameters
            .get("realm")
            .ok_or_else(|| format!("registry {}'s challenge names no realm", reference.registry))?;
        realm_allowed(realm, reference)?;
        let scope = parameters
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", reference.repository));
        let mut request = agent.get(realm).query("scope", &scope);
        if let Some(service) = parameters.get("service") {
            request = request.query("service", service);
        }
        let mut response = request
            .call()
            .map_err(|e| format!("token service {realm} unreachable: {e}"))?;
        if response.status() != 200 {
            return Err(format!(
                "token service {realm} answered {}",
                response.status().as_u16()
            ));
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT_BYTES)
            .read_to_vec()
            .map_err(|e| format!("cannot read the token from {realm}: {e}"))?;
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| format!("token service {realm} answered no token: {e}"))?;
        answer
            .token
            .or(answer.access_token)
            .filter(|token| {
                !token.is_empty() && token.len() < 64 * 1024 && !token.contains(['\r', '\n'])
            })
            .ok_or_else(|| format!("token service {realm} answered no token"))
    }
}

fn https_agent(ca_bundle: &Path) -> Result<ureq::Agent, String> {
    use ureq::tls::{PemItem, RootCerts, TlsConfig};
    let pem = std::fs::read(ca_bundle)
        .map_err(|e| format!("cannot read the CA bundle {}: {e}", ca_bundle.display()))?;
    let roots: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(certificate)) => Some(certificate),
            _ => None,
        })
        .collect();
    if roots.is_empty() {
        return Err(format!("{} holds no certificates", ca_bundle.display()));
    }
    let tls = TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .root_certs(RootCerts::new_with_certs(&roots))
        .build();
    // Never a step down to plain HTTP, redirects included.
    Ok(config().tls_config(tls).https_only(true).build().into())
}

/// Whether the agent fetches a token from `realm` for `reference`'s
/// registry: over HTTPS, or over plain HTTP from loopback for a registry
/// on loopback (a test's or a local mirror's).
fn realm_allowed(realm: &str, reference: &Reference) -> Result<(), String> {
    if realm.starts_with("https://") {
        return Ok(());
    }
    let host = realm
        .strip_prefix("http://")
        .and_then(|rest| rest.split(['/', '?']).next())
        .ok_or_else(|| {
            format!(
                "registry {}'s token realm {realm:?} is not a URL",
                reference.registry
            )
        })?;
    let realm_on_loopback = Reference {
        registry: host.to_owned(),
        repository: String::new(),
        reference: String::new(),
    }
    .on_loopback();
    if reference.on_loopback() && realm_on_loopback {
        return Ok(());
    }
    Err(format!(
        "registry {}'s token realm {realm:?} is not HTTPS",
        reference.registry
    ))
}

/// The parameters of a `Bearer` challenge; `None` for other schemes.
pub fn parse_challenge(challenge: &str) -> Option<BTreeMap<String, String>> {
    let rest = challenge.trim();
    let (scheme, rest) = rest.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut parameters = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        parameters.insert(name.trim().to_ascii_lowercase(), value.to_owned());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(parameters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_read() {
        let parameters = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(parameters["realm"], "https://auth.docker.io/token");
        assert_eq!(parameters["service"], "registry.docker.io");
        assert_eq!(parameters["scope"], "repository:library/busybox:pull");
        assert_eq!(
            parse_challenge("Bearer realm=http://127.0.0.1:1/t").unwrap()["realm"],
            "http://127.0.0.1:1/t"
        );
        assert!(parse_challenge(r#"Basic realm="x""#).is_none());
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn tokens_come_over_https_or_from_loopback_to_loopback() {
        let reference = |registry: &str| Reference {
            registry: registry.into(),
            repository: "x".into(),
            reference: "latest".into(),
        };
        let (remote, local) = (reference("registry.example"), reference("127.0.0.1:5000"));
        assert!(realm_allowed("https://auth.example/token", &remote).is_ok());
        assert!(realm_allowed("http://auth.example/token", &remote).is_err());
        assert!(realm_allowed("http://127.0.0.1:1/token", &remote).is_err());
        assert!(realm_allowed("http://127.0.0.1:5001/token", &local).is_ok());
        assert!(realm_allowed("http://169.254.169.254/latest", &local).is_err());
        assert!(realm_allowed("ftp://x", &local).is_err());
    }
}
