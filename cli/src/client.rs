//! The CLI's HTTP client: `GET` on a master's or an agent's endpoints,
//! through ureq, with bounded waits and answers.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Largest answer read: `/state` of a cluster of tens of thousands of
/// agents and tasks.
const MAX_ANSWER_BYTES: u64 = 1 << 30;

/// The CLI's HTTP agent and the scheme it speaks, set once.
struct Client {
    agent: ureq::Agent,
    scheme: &'static str,
}

static CLIENT: OnceLock<Client> = OnceLock::new();

fn client() -> &'static Client {
    CLIENT.get_or_init(|| Client {
        agent: config().build().into(),
        scheme: "http",
    })
}

fn config() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(Duration::from_secs(60)))
}

/// Whether to speak HTTPS, and with which certificate.
#[derive(Debug, clap::Args)]
pub struct HttpsArgs {
    /// Speak HTTPS to the master and the agents: verify them with the
    /// cluster's CA and present an operator's certificate (from
    /// --tls-dir, or one the development CA in --work-dir issues).
    #[arg(long, env = "STRATA_HTTPS")]
    pub https: bool,
    #[command(flatten)]
    pub tls: crate::TlsSource,
}

/// Sets up the client as `args` ask, before its first request.
pub fn configure(args: &HttpsArgs) -> anyhow::Result<()> {
    if !args.https {
        return Ok(());
    }
    let material = args
        .tls
        .material(strata_runtime::Role::Operator, "strata-cli")?;
    let client = Client {
        agent: https_agent(&material)?,
        scheme: "https",
    };
    if CLIENT.set(client).is_err() {
        bail!("the HTTP client was configured twice");
    }
    Ok(())
}

/// A ureq agent that trusts only `material`'s CAs and presents its
/// certificate.
pub fn https_agent(material: &strata_runtime::TlsMaterial) -> anyhow::Result<ureq::Agent> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let roots: Vec<Certificate<'static>> = material
        .roots()
        .iter()
        .map(|root| Certificate::from_der(root.as_ref()).to_owned())
        .collect();
    let chain: Vec<Certificate<'static>> = material
        .chain()
        .iter()
        .map(|certificate| Certificate::from_der(certificate.as_ref()).to_owned())
        .collect();
    let key = PrivateKey::from_pem(material.key_pem().as_bytes())
        .context("the certificate's key cannot be used for HTTPS")?;
    let tls = TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .root_certs(RootCerts::new_with_certs(&roots))
        .client_cert(Some(ClientCert::new_with_certs(&chain, key)))
        .build();
    Ok(config().tls_config(tls).build().into())
}

/// Endpoints that need credentials get the principal and secret from
/// STRATA_HTTP_PRINCIPAL and STRATA_HTTP_SECRET.
fn authorization() -> Option<String> {
    use base64::Engine;
    let principal = std::env::var("STRATA_HTTP_PRINCIPAL").ok()?;
    let secret = std::env::var("STRATA_HTTP_SECRET").ok()?;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{principal}:{secret}"));
    Some(format!("Basic {token}"))
}

/// `GET path` (already percent-encoded) on `address`; the body of a 200
/// answer, or an error saying what the server answered.
pub fn get(address: SocketAddr, path: &str) -> anyhow::Result<Vec<u8>> {
    let client = client();
    let url = format!("{}://{address}{path}", client.scheme);
    let mut request = client.agent.get(&url);
    if let Some(authorization) = authorization() {
        request = request.header("Authorization", authorization);
    }
    let mut response = request.call().with_context(|| {
        format!(
            "cannot reach the HTTP API at {address} (is it running? --master or STRATA_MASTER names the master)"
        )
    })?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
        .with_context(|| format!("reading the answer to {path} from {address}"))?;
    if status != 200 {
        let reason = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|error| error["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
        let hint = if reason.contains("HTTPS only") {
            " (pass --https, with an operator's certificate in --tls-dir)"
        } else if status == 401 {
            " (set STRATA_HTTP_PRINCIPAL and STRATA_HTTP_SECRET, or use --https with an operator's certificate)"
        } else {
            ""
        };
        bail!("{address} answered {path} with {status}: {reason}{hint}");
    }
    Ok(body)
}
