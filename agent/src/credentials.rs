//! Executors' own credentials.
//!
//! A custom executor is a stranger's program: it must not hold its
//! agent's key (with it, it could speak as the agent). Each agent keeps a
//! certificate authority of its own (`executor-ca.pem` in its work
//! directory, mode 0600, so executors reconnecting to a restarted agent
//! are still trusted) and issues every executor a certificate for the
//! executor role, named `<framework>/<executor>`, valid for
//! [`EXECUTOR_CERTIFICATE_VALIDITY`]. Only the agent's own node trusts
//! that authority, so the certificate is worth nothing anywhere but at
//! its agent, and the agent accepts an executor's messages only under
//! the identity it issued to it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_protocol::{ExecutorId, FrameworkId};
use strata_runtime::tls::TlsError;
use strata_runtime::{CertificateAuthority, PeerIdentity, Role, TlsMaterial};

/// How long an executor's certificate is valid: it is used to connect
/// (again) to its agent, so it must outlive an agent restart; existing
/// connections are not cut when it expires.
pub const EXECUTOR_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// The file in an agent's work directory holding its executor authority.
pub const EXECUTOR_CA_FILE: &str = "executor-ca.pem";

/// What an agent issues executors' credentials with.
#[derive(Clone)]
pub struct ExecutorCredentials {
    /// Whom executors trust: the cluster's roots, so they can check
    /// their agent.
    cluster: Arc<TlsMaterial>,
    authority: Arc<CertificateAuthority>,
}

impl std::fmt::Debug for ExecutorCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorCredentials")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl ExecutorCredentials {
    /// Credentials kept in `work_dir` (created on first use), for an
    /// agent whose own material is `cluster`.
    pub fn kept_in(
        work_dir: &Path,
        cluster: &TlsMaterial,
    ) -> Result<ExecutorCredentials, TlsError> {
        let authority = CertificateAuthority::kept_in(
            &work_dir.join("meta").join(EXECUTOR_CA_FILE),
            "Strata agent executor CA",
        )?;
        Ok(ExecutorCredentials {
            cluster: Arc::new(cluster.clone()),
            authority: Arc::new(authority),
        })
    }

    /// Credentials that live as long as this value (tests).
    pub fn in_memory(cluster: &TlsMaterial) -> Result<ExecutorCredentials, TlsError> {
        Ok(ExecutorCredentials {
            cluster: Arc::new(cluster.clone()),
            authority: Arc::new(CertificateAuthority::generate("Strata agent executor CA")?),
        })
    }

    /// Makes the agent's node trust the executors these credentials
    /// issue; call before binding the node.
    pub fn trusted_by(&self, node: &mut TlsMaterial) {
        node.trust(&self.authority);
    }

    /// A certificate for one executor, trusting the cluster's roots.
    pub fn issue(
        &self,
        framework_id: &FrameworkId,
        executor_id: &ExecutorId,
    ) -> Result<TlsMaterial, TlsError> {
        Ok(self
            .authority
            .issue_for(
                Role::Executor,
                &executor_name(framework_id, executor_id),
                EXECUTOR_CERTIFICATE_VALIDITY,
            )?
            .with_roots_of(&self.cluster))
    }
}

/// The certificate name of `executor_id` of `framework_id`.
pub fn executor_name(framework_id: &FrameworkId, executor_id: &ExecutorId) -> String {
    format!("{framework_id}/{executor_id}")
}

/// Whether `identity` is the one issued to that executor.
pub fn is_executor(
    identity: &PeerIdentity,
    framework_id: &FrameworkId,
    executor_id: &ExecutorId,
) -> bool {
    identity.is(Role::Executor) && identity.name == executor_name(framework_id, executor_id)
}
