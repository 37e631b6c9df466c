//! Mutual TLS: the cluster CA, node certificates and peer identities.
//!
//! Every connection between nodes is mutually authenticated with ECDSA P-256
//! certificates (RSA signs thirty times slower). A node trusts exactly the
//! certificates its cluster CA signed; a peer whose certificate does not
//! chain to that CA is refused during the handshake.
//!
//! Two ways to get material:
//! - production: [`TlsMaterial::load`] reads `ca.pem`, `node.pem` and
//!   `node-key.pem` from a directory (`--tls-dir`);
//! - development and tests: [`TlsMaterial::development`] keeps a CA
//!   (`dev-ca.pem`, certificate and key, mode 0600) in the work directory,
//!   creating it on first use, and issues a fresh node certificate from it
//!   at every start, so nothing needs configuring.
//!
//! A node's identity is what its verified certificate says: a [`Role`]
//! (master, agent, framework, executor, operator, in the organizational
//! unit) and a name (the common name). Nothing a peer announces about
//! itself counts: the runtime lets a peer send only under process ids its
//! role may use ([`PeerIdentity::may_send_as`]), and the receiving process
//! reads the sender's [`PeerIdentity`] to authorise on it.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The name every node certificate carries as a DNS subject alternative
/// name, and that dialling nodes verify. Which node a peer is comes from
/// its common name, not from this.
pub const SERVER_NAME: &str = "strata-node";

/// File names in a TLS directory.
pub const CA_FILE: &str = "ca.pem";
pub const NODE_CERT_FILE: &str = "node.pem";
pub const NODE_KEY_FILE: &str = "node-key.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const DEV_CA_FILE: &str = "dev-ca.pem";

/// Why TLS material could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no {what}")]
    Missing { path: PathBuf, what: &'static str },
    #[error("{path} is not valid PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    #[error("refusing {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
}

/// How long certificates issued by [`CertificateAuthority::issue`] are
/// valid unless told otherwise (a year, as `strata tls cert` defaults).
pub const DEFAULT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// How long the development CA's node certificates are valid: nodes get a
/// fresh one at every start.
pub const DEVELOPMENT_VALIDITY: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 3600);

/// What a certificate lets its holder be in a cluster.
///
/// Process ids are namespaced by role: `master` and `master-*` belong to
/// masters, `agent` and `agent-*` to agents, `executor-*` to executors,
/// `operator` and `operator-*` to operators; any other id is open to every
/// role. A peer whose certificate has another role (or none) cannot send
/// under such an id: the runtime drops the message and counts it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Role {
    Master,
    Agent,
    /// A framework's scheduler; the certificate's name is its principal.
    Framework,
    /// One executor of one framework, issued by the agent that runs it.
    Executor,
    /// A person or tool acting on the whole cluster (kills, teardowns).
    Operator,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 5] = [
        Role::Master,
        Role::Agent,
        Role::Framework,
        Role::Executor,
        Role::Operator,
    ];

    /// The role's name, as certificates and flags spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Agent => "agent",
            Role::Framework => "framework",
            Role::Executor => "executor",
            Role::Operator => "operator",
        }
    }

    /// The role that owns process id `id`, if any does.
    pub fn owning(id: &str) -> Option<Role> {
        let owned = |prefix: &str, bare: bool| {
            (bare && id == prefix)
                || id
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('-'))
        };
        if owned("master", true) {
            Some(Role::Master)
        } else if owned("agent", true) {
            Some(Role::Agent)
        } else if owned("executor", false) {
            Some(Role::Executor)
        } else if owned("operator", true) {
            Some(Role::Operator)
        } else {
            None
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown role {text:?}; one of master, agent, framework, executor, operator"
                )
            })
    }
}

/// Who a peer node is, as its certificate says.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// The certificate's role; `None` for a certificate that names none
    /// (such a peer may send only under ids no role owns).
    pub role: Option<Role>,
    /// The certificate's common name: the node's name in the cluster (a
    /// framework's principal, an agent's name, an executor's
    /// `framework/executor`).
    pub name: String,
    /// SHA-256 of the certificate, hex: pins one certificate exactly.
    pub fingerprint: String,
}

impl PeerIdentity {
    /// Reads the identity from a verified end-entity certificate.
    pub fn from_certificate(der: &CertificateDer<'_>) -> PeerIdentity {
        let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        let fingerprint = digest
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        // The certificate has passed webpki verification before this runs,
        // so it parses; a certificate without a common name is named by
        // its fingerprint alone.
        let parsed = x509_parser::parse_x509_certificate(der.as_ref()).ok();
        let subject = parsed.as_ref().map(|(_, cert)| cert.subject());
        let name = subject
            .and_then(|subject| {
                subject
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok().map(str::to_owned))
            })
            .unwrap_or_default();
        // A certificate naming several roles names none.
        let roles: Vec<Role> = subject
            .map(|subject| {
                subject
                    .iter_organizational_unit()
                    .filter_map(|unit| unit.as_str().ok()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let role = match roles.as_slice() {
            [role] => Some(*role),
            _ => None,
        };
        PeerIdentity {
            role,
            name,
            fingerprint,
        }
    }

    /// An identity made up for a simulated or in-memory peer, which has
    /// no certificate.
    pub fn simulated(role: Option<Role>, name: &str) -> PeerIdentity {
        PeerIdentity {
            role,
            name: name.to_owned(),
            fingerprint: format!("simulated-{name}"),
        }
    }

    /// Whether this peer may send under process id `id`: ids a role owns
    /// ([`Role::owning`]) only with that role's certificate.
    pub fn may_send_as(&self, id: &str) -> bool {
        match Role::owning(id) {
            None => true,
            Some(owner) => self.role == Some(owner),
        }
    }

    /// Whether this identity has `role`.
    pub fn is(&self, role: Role) -> bool {
        self.role == Some(role)
    }
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{self} ({}…)",
            &self.fingerprint[..12.min(self.fingerprint.len())]
        )
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role {
            Some(role) => write!(f, "{role} {}", self.name),
            None => write!(f, "(no role) {}", self.name),
        }
    }
}

/// What a node needs for mutual TLS: the CA certificates it trusts and its
/// own certificate chain and key.
pub struct TlsMaterial {
    pub(crate) roots: Vec<CertificateDer<'static>>,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("identity", &self.identity())
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl Clone for TlsMaterial {
    fn clone(&self) -> TlsMaterial {
        TlsMaterial {
            roots: self.roots.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsMaterial {
    /// Production material from `dir`: `ca.pem` (the CA certificates to
    /// trust), `node.pem` (this node's chain) and `node-key.pem`.
    pub fn load(dir: &Path) -> Result<TlsMaterial, TlsError> {
        let roots = read_certificates(&dir.join(CA_FILE), "CA certificate")?;
        let chain = read_certificates(&dir.join(NODE_CERT_FILE), "node certificate")?;
        let key = read_key(&dir.join(NODE_KEY_FILE))?;
        Ok(TlsMaterial { roots, chain, key })
    }

    /// Development material: the CA in `dir` (created on first use) issues
    /// a certificate for `name` in `role`. Safe when several processes
    /// start at once on an empty directory: the first CA written wins and
    /// all use it.
    pub fn development(dir: &Path, role: Role, name: &str) -> Result<TlsMaterial, TlsError> {
        TlsMaterial::development_serving(dir, role, name, &[])
    }

    /// Development material whose certificate also names `hosts` (the
    /// addresses the node serves HTTPS on).
    pub fn development_serving(
        dir: &Path,
        role: Role,
        name: &str,
        hosts: &[String],
    ) -> Result<TlsMaterial, TlsError> {
        CertificateAuthority::development(dir)?.issue_serving(
            role,
            name,
            DEVELOPMENT_VALIDITY,
            hosts,
        )
    }

    /// The CA certificates this material trusts.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// This node's certificate chain, its own certificate first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// This node's private key.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// This node's identity, from its own certificate.
    pub fn identity(&self) -> PeerIdentity {
        self.chain
            .first()
            .map(PeerIdentity::from_certificate)
            .unwrap_or_else(|| PeerIdentity {
                role: None,
                name: String::new(),
                fingerprint: String::new(),
            })
    }

    /// Also trusts certificates `ca` issued (an agent trusts the
    /// executors it issued credentials to).
    pub fn trust(&mut self, ca: &CertificateAuthority) {
        if !self.roots.contains(&ca.certificate) {
            self.roots.push(ca.certificate.clone());
        }
    }

    /// This material, trusting exactly what `other` trusts.
    pub fn with_roots_of(mut self, other: &TlsMaterial) -> TlsMaterial {
        self.roots = other.roots.clone();
        self
    }

    /// Writes this material as a production TLS directory.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })?;
        write_file(
            &dir.join(CA_FILE),
            pem_certificates(&self.roots).as_bytes(),
            0o644,
        )?;
        write_file(
            &dir.join(NODE_CERT_FILE),
            pem_certificates(&self.chain).as_bytes(),
            0o644,
        )?;
        write_file(&dir.join(NODE_KEY_FILE), self.key_pem().as_bytes(), 0o600)
    }

    /// This node's private key, PEM, labelled with its kind.
    pub fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem::encode(&pem::Pem::new(label, self.key.secret_der().to_vec()))
    }
}

fn pem_certificates(certificates: &[CertificateDer<'_>]) -> String {
    certificates
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.as_ref().to_vec())))
        .collect()
}

/// A cluster certificate authority that can issue node certificates.
pub struct CertificateAuthority {
    certificate: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field(
                "identity",
                &PeerIdentity::from_certificate(&self.certificate),
            )
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new CA named `name`, in memory.
    pub fn generate(name: &str) -> Result<CertificateAuthority, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = distinguished_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key)?.der().clone();
        Ok(CertificateAuthority {
            certificate,
            issuer: Issuer::new(params, key),
        })
    }

    /// Reads a CA from its certificate and key PEM.
    pub fn from_pem(
        certificate_pem: &str,
        key_pem: &str,
    ) -> Result<CertificateAuthority, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let certificate =
            CertificateDer::from_pem_slice(certificate_pem.as_bytes()).map_err(|e| {
                TlsError::Pem {
                    path: PathBuf::from("<CA certificate>"),
                    reason: e.to_string(),
                }
            })?;
        let issuer = Issuer::from_ca_cert_pem(certificate_pem, key)?;
        Ok(CertificateAuthority {
            certificate,
            issuer,
        })
    }

    /// The development CA kept in `dir`, created if absent.
    pub fn development(dir: &Path) -> Result<CertificateAuthority, TlsError> {
        CertificateAuthority::kept_in(&dir.join(DEV_CA_FILE), "Strata development CA")
    }

    /// A CA kept in one file at `path` (its certificate, then its key;
    /// mode 0600), created with the common name `name` if absent. Safe
    /// when several processes start at once: the first CA written wins
    /// and all use it. A file another user owns or could write is
    /// refused.
    pub fn kept_in(path: &Path, name: &str) -> Result<CertificateAuthority, TlsError> {
        if !path.exists() {
            let dir = path.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(dir).map_err(|source| TlsError::Write {
                path: dir.to_owned(),
                source,
            })?;
            let ca = CertificateAuthority::generate(name)?;
            let both = format!("{}{}", ca.certificate_pem(), ca.key_pem());
            // Write aside, then link into place: linking fails if another
            // process got there first, and then its CA is the one used.
            let file_name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let aside = dir.join(format!("{file_name}.{}.tmp", std::process::id()));
            write_file(&aside, both.as_bytes(), 0o600)?;
            let linked = fs::hard_link(&aside, path);
            let _ = fs::remove_file(&aside);
            match linked {
                Ok(()) => return Ok(ca),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(TlsError::Write {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
        }
        check_private(path)?;
        let text = fs::read_to_string(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let (certificate, key) =
            split_certificate_and_key(&text).ok_or_else(|| TlsError::Missing {
                path: path.to_owned(),
                what: "CA certificate followed by its private key",
            })?;
        CertificateAuthority::from_pem(certificate, key)
    }

    /// Issues a node certificate for `name` in `role`, valid for
    /// [`DEFAULT_VALIDITY`], returning complete material that trusts this
    /// CA.
    pub fn issue(&self, role: Role, name: &str) -> Result<TlsMaterial, TlsError> {
        self.issue_for(role, name, DEFAULT_VALIDITY)
    }

    /// Issues a node certificate for `name` in `role`, valid from an hour
    /// ago (clocks differ) for `validity`.
    pub fn issue_for(
        &self,
        role: Role,
        name: &str,
        validity: std::time::Duration,
    ) -> Result<TlsMaterial, TlsError> {
        self.issue_serving(role, name, validity, &[])
    }

    /// Issues a node certificate as [`CertificateAuthority::issue_for`]
    /// that also names `hosts` (IP addresses or DNS names), so that HTTPS
    /// clients reaching the node by them can verify it.
    pub fn issue_serving(
        &self,
        role: Role,
        name: &str,
        validity: std::time::Duration,
        hosts: &[String],
    ) -> Result<TlsMaterial, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut names = vec![SERVER_NAME.to_owned()];
        for host in hosts {
            if host.parse::<std::net::IpAddr>().is_err()
                && rustls::pki_types::DnsName::try_from(host.as_str()).is_err()
            {
                return Err(TlsError::Config(format!(
                    "{host:?} is neither an IP address nor a DNS name"
                )));
            }
            if !names.contains(host) {
                names.push(host.clone());
            }
        }
        let mut params = CertificateParams::new(names)?;
        let mut subject = distinguished_name(name);
        subject.push(DnType::OrganizationalUnitName, role.as_str());
        params.distinguished_name = subject;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now
            + time::Duration::try_from(validity)
                .map_err(|e| TlsError::Config(format!("validity {validity:?}: {e}")))?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(TlsMaterial {
            roots: vec![self.certificate.clone()],
            chain: vec![certificate.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        pem_certificates(std::slice::from_ref(&self.certificate))
    }

    /// The CA private key, PEM. Keep it secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Writes `ca.pem` and `ca-key.pem` (mode 0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })?;
        write_file(&dir.join(CA_FILE), self.certificate_pem().as_bytes(), 0o644)?;
        write_file(&dir.join(CA_KEY_FILE), self.key_pem().as_bytes(), 0o600)
    }

    /// Reads `ca.pem` and `ca-key.pem` from `dir`.
    pub fn load(dir: &Path) -> Result<CertificateAuthority, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| TlsError::Read { path, source })
        };
        CertificateAuthority::from_pem(&read(CA_FILE)?, &read(CA_KEY_FILE)?)
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "Strata");
    name
}

/// Splits a file holding a certificate PEM block and a key PEM block.
fn split_certificate_and_key(text: &str) -> Option<(&str, &str)> {
    let key_start = text.find("-----BEGIN PRIVATE KEY-----")?;
    let (certificate, key) = text.split_at(key_start);
    certificate
        .contains("-----BEGIN CERTIFICATE-----")
        .then_some((certificate, key))
}

/// Refuses a key file that another user owns or could have written: a CA
/// key planted or swapped by someone else would let them mint identities.
fn check_private(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::MetadataExt;
    let metadata = fs::symlink_metadata(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let unsafe_file = |reason: String| TlsError::Unsafe {
        path: path.to_owned(),
        reason,
    };
    if !metadata.file_type().is_file() {
        return Err(unsafe_file("it is not a regular file".into()));
    }
    let uid = rustix::process::geteuid().as_raw();
    if metadata.uid() != uid {
        return Err(unsafe_file(format!(
            "it is owned by uid {}, not by this user (uid {uid})",
            metadata.uid()
        )));
    }
    if metadata.mode() & 0o077 != 0 {
        return Err(unsafe_file(format!(
            "its mode {:o} lets other users read or write it; it should be 600",
            metadata.mode() & 0o777
        )));
    }
    Ok(())
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)
}

fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_owned(),
            what,
        });
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Timing knobs of the QUIC transport that the TLS-level configs carry.
#[derive(Debug, Clone)]
pub struct QuicTimeouts {
    /// A connection with no packets for this long is dead.
    pub idle_timeout: std::time::Duration,
    /// How often an otherwise quiet connection sends a keep-alive; below
    /// the idle timeout so a live peer is never mistaken for a dead one.
    pub keep_alive_interval: std::time::Duration,
}

/// The rustls server config for HTTPS on a node's HTTP port: the node's
/// certificate, TLS 1.3, HTTP/1.1 by ALPN, and client certificates
/// verified against the CAs `material` trusts but not required (clients
/// may still authenticate with HTTP credentials, or not at all for
/// public endpoints). A client certificate that fails verification fails
/// the handshake.
pub fn https_server_config(material: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let roots = root_store(material)?;
    Ok(Arc::new(server_config(
        material,
        roots,
        ClientCertificates::Optional,
        b"http/1.1".to_vec(),
    )?))
}

/// Whether a server demands client certificates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientCertificates {
    Required,
    Optional,
}

/// The CAs `material` trusts, as rustls takes them.
fn root_store(material: &TlsMaterial) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for root in &material.roots {
        roots
            .add(root.clone())
            .map_err(|e| TlsError::Config(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

/// A TLS 1.3 server config with `material`'s certificate, verifying
/// client certificates against `roots`, speaking `alpn`.
fn server_config(
    material: &TlsMaterial,
    roots: Arc<rustls::RootCertStore>,
    clients: ClientCertificates,
    alpn: Vec<u8>,
) -> Result<rustls::ServerConfig, TlsError> {
    let config_error = |e: &dyn fmt::Display| TlsError::Config(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if clients == ClientCertificates::Optional {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier.build().map_err(|e| config_error(&e))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_error(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.chain.clone(), material.key.clone_key())
        .map_err(|e| config_error(&e))?;
    server.alpn_protocols = vec![alpn];
    Ok(server)
}

/// quinn server and client configs for mutual TLS with `material`,
/// speaking protocol `version` (in the ALPN). Exposed so benchmarks and
/// tests can build raw QUIC peers with exactly the node's settings.
pub fn quic_configs(
    material: &TlsMaterial,
    version: u32,
    timeouts: &QuicTimeouts,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TlsError> {
    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    let config_error = |e: &dyn fmt::Display| TlsError::Config(e.to_string());

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = root_store(material)?;
    let alpn = crate::codec::alpn(version);
    let server = server_config(
        material,
        roots.clone(),
        ClientCertificates::Required,
        alpn.clone(),
    )?;

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_error(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(material.chain.clone(), material.key.clone_key())
        .map_err(|e| config_error(&e))?;
    client.alpn_protocols = vec![alpn];

    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(timeouts.idle_timeout).map_err(|e| config_error(&e))?,
        ))
        .keep_alive_interval(Some(timeouts.keep_alive_interval))
        // One bidirectional stream per connection carries both directions;
        // a peer may open no more, so it cannot make the node hold streams.
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into());
    let transport = Arc::new(transport);

    let server_crypto = QuicServerConfig::try_from(server).map_err(|e| config_error(&e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport.clone());

    let client_crypto = QuicClientConfig::try_from(client).map_err(|e| config_error(&e))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport);
    Ok((server, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_the_node_name() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let material = ca.issue(Role::Agent, "agent-7").unwrap();
        assert_eq!(material.identity().name, "agent-7");
        assert_eq!(material.identity().role, Some(Role::Agent));
        assert_eq!(material.identity().fingerprint.len(), 64);
        // Hosts for HTTPS clients are addresses or DNS names, nothing else.
        let day = std::time::Duration::from_secs(24 * 3600);
        let hosts = ["10.0.0.7".to_owned(), "node-7.example".to_owned()];
        assert!(
            ca.issue_serving(Role::Agent, "agent-7", day, &hosts)
                .is_ok()
        );
        let error = ca
            .issue_serving(Role::Agent, "agent-7", day, &["not a host!".to_owned()])
            .unwrap_err();
        assert!(
            error.to_string().contains("neither an IP address"),
            "{error}"
        );
    }

    #[test]
    fn ids_belong_to_roles() {
        let check =
            |id: &str, expected: Option<Role>| assert_eq!(Role::owning(id), expected, "{id}");
        check("master", Some(Role::Master));
        check("master-2", Some(Role::Master));
        check("masterful", None);
        check("agent", Some(Role::Agent));
        check("agent-17", Some(Role::Agent));
        check("agents", None);
        check("executor-web-1", Some(Role::Executor));
        check("executor", None);
        check("operator", Some(Role::Operator));
        check("scheduler-1", None);
        let agent = PeerIdentity::simulated(Some(Role::Agent), "a1");
        assert!(agent.may_send_as("agent"));
        assert!(agent.may_send_as("echo"));
        assert!(!agent.may_send_as("master"));
        assert!(!agent.may_send_as("operator"));
        let nobody = PeerIdentity::simulated(None, "n");
        assert!(!nobody.may_send_as("agent"));
        assert!(nobody.may_send_as("scheduler-1"));
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().unwrap_err().contains("root"));
    }

    #[test]
    fn certificates_expire() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let material = ca
            .issue_for(Role::Executor, "f/e", std::time::Duration::from_secs(3600))
            .unwrap();
        let der = material.chain[0].clone();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 2 * 3600);
    }

    #[test]
    fn development_ca_refuses_files_others_could_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("strata-tls-unsafe-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        CertificateAuthority::development(&dir).unwrap();
        let path = dir.join(DEV_CA_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let error = CertificateAuthority::development(&dir).unwrap_err();
        assert!(error.to_string().contains("should be 600"), "{error}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        CertificateAuthority::development(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn development_ca_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("strata-tls-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = CertificateAuthority::development(&dir).unwrap();
        let second = CertificateAuthority::development(&dir).unwrap();
        assert_eq!(first.certificate_pem(), second.certificate_pem());
        let mode = fs::metadata(dir.join(DEV_CA_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn saved_material_loads_back() {
        let dir = std::env::temp_dir().join(format!("strata-tls-save-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let material = ca.issue(Role::Master, "master").unwrap();
        material.save(&dir).unwrap();
        let loaded = TlsMaterial::load(&dir).unwrap();
        assert_eq!(loaded.identity(), material.identity());
        ca.save(&dir).unwrap();
        let reloaded = CertificateAuthority::load(&dir).unwrap();
        assert_eq!(reloaded.certificate_pem(), ca.certificate_pem());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_files_are_named() {
        let error = TlsMaterial::load(Path::new("/nonexistent-strata-tls")).unwrap_err();
        assert!(error.to_string().contains("ca.pem"), "{error}");
    }
}
