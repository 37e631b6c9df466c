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

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    })
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
    let url = format!("http://{address}{path}");
    let mut request = agent().get(&url);
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
        let hint = if status == 401 {
            " (set STRATA_HTTP_PRINCIPAL and STRATA_HTTP_SECRET)"
        } else {
            ""
        };
        bail!("{address} answered {path} with {status}: {reason}{hint}");
    }
    Ok(body)
}
