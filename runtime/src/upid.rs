//! Process addresses: `id@ip:port`, as libprocess's UPIDs.
//!
//! A [`Upid`] names one process (actor) on one node. The text form is the
//! one operators see and type (`master@127.0.0.1:5050`,
//! `agent@[::1]:5051`). Beside it every address carries the [`Incarnation`]
//! of the node it lives on: a node that restarts gets a new incarnation, so a
//! message addressed to the process's previous life, or sent by it, is
//! recognised and dropped instead of being mistaken for current state. The
//! incarnation is not part of the text form; an address parsed from text has
//! [`Incarnation::ANY`], which matches whatever incarnation the node has.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest process id accepted, in bytes. Ids come from peers and users,
/// so they are bounded like everything else that grows from outside input.
pub const MAX_ID_BYTES: usize = 128;

/// Which life of a node an address belongs to. Chosen afresh each time a
/// node starts; [`Incarnation::ANY`] (zero) means "whichever is current".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Incarnation(pub u64);

impl Incarnation {
    /// Matches any incarnation: what an address typed by a user carries.
    pub const ANY: Incarnation = Incarnation(0);

    /// Whether a message addressed to `self` may be delivered to a node
    /// currently in incarnation `current`.
    pub fn admits(self, current: Incarnation) -> bool {
        self == Self::ANY || self == current
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The address of one process: its id, its node's socket address and the
/// node's incarnation.
///
/// Cloning is cheap (the id is shared), because addresses travel with every
/// message.
#[derive(Clone, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "WireUpid", into = "WireUpid")]
pub struct Upid {
    id: Arc<str>,
    addr: SocketAddr,
    incarnation: Incarnation,
}

impl Upid {
    /// An address with a checked id.
    pub fn new(
        id: &str,
        addr: SocketAddr,
        incarnation: Incarnation,
    ) -> Result<Upid, UpidParseError> {
        validate_id(id)?;
        Ok(Upid {
            id: Arc::from(id),
            addr,
            incarnation,
        })
    }

    /// The process id, the part before `@`.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn id_shared(&self) -> &Arc<str> {
        &self.id
    }

    /// The node's socket address, the part after `@`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node incarnation this address refers to.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The same process id and node in another incarnation.
    pub fn with_incarnation(&self, incarnation: Incarnation) -> Upid {
        Upid {
            id: self.id.clone(),
            addr: self.addr,
            incarnation,
        }
    }

    /// Whether both name the same process id on the same node address,
    /// whatever the incarnations.
    pub fn same_name(&self, other: &Upid) -> bool {
        self.addr == other.addr && self.id == other.id
    }

    /// Its id and node address without the incarnation, as a key (cheap:
    /// the id is shared, not copied or formatted).
    pub fn name(&self) -> ProcessName {
        ProcessName {
            addr: self.addr,
            id: self.id.clone(),
        }
    }
}

/// A process's id and its node's address, whatever the node's
/// incarnation ([`Upid::name`]): what a restarted node's process is known
/// by again. Ordered by address, then id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessName {
    addr: SocketAddr,
    id: Arc<str>,
}

impl fmt::Display for ProcessName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

impl fmt::Debug for ProcessName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialEq for Upid {
    fn eq(&self, other: &Upid) -> bool {
        // Copies of one address share their id: comparing the pointer
        // first keeps the common case (a process sending to an address it
        // holds) free of string comparisons.
        self.addr == other.addr
            && self.incarnation == other.incarnation
            && (Arc::ptr_eq(&self.id, &other.id) || self.id == other.id)
    }
}

impl Eq for Upid {}

impl std::hash::Hash for Upid {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The same fields as equality, so equal addresses hash alike.
        self.id.hash(state);
        self.addr.hash(state);
        self.incarnation.hash(state);
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SocketAddr's Display already brackets IPv6 hosts.
        write!(f, "{}@{}", self.id, self.addr)
    }
}

impl fmt::Debug for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.id, self.addr, self.incarnation)
    }
}

/// The serialised form; deserialising goes through [`Upid::new`] so an id
/// that came from a peer is checked like one typed by a user.
#[derive(Serialize, Deserialize)]
struct WireUpid {
    id: String,
    addr: SocketAddr,
    incarnation: Incarnation,
}

impl TryFrom<WireUpid> for Upid {
    type Error = UpidParseError;

    fn try_from(wire: WireUpid) -> Result<Upid, UpidParseError> {
        Upid::new(&wire.id, wire.addr, wire.incarnation)
    }
}

impl From<Upid> for WireUpid {
    fn from(upid: Upid) -> WireUpid {
        WireUpid {
            id: upid.id.to_string(),
            addr: upid.addr,
            incarnation: upid.incarnation,
        }
    }
}

/// Why a text is not a valid `id@ip:port` address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpidParseError {
    #[error("address {0:?} has no '@' between the process id and the node address")]
    MissingAt(String),
    #[error("address has an empty process id before '@'")]
    EmptyId,
    #[error("process id is {0} bytes long; at most {MAX_ID_BYTES} are allowed")]
    IdTooLong(usize),
    #[error("process id {id:?} contains {character:?}; ids use letters, digits, '.', '_' and '-'")]
    InvalidIdCharacter { id: String, character: char },
    #[error("node address {0:?} has no ':port'")]
    MissingPort(String),
    #[error("port {0:?} is not a number from 0 to 65535")]
    InvalidPort(String),
    #[error("host {0:?} is not an IPv4 address or a bracketed IPv6 address like [::1]")]
    InvalidIp(String),
    #[error("IPv6 host in {0:?} must be written in brackets, like [::1]:5050")]
    UnbracketedIpv6(String),
}

fn validate_id(id: &str) -> Result<(), UpidParseError> {
    if id.is_empty() {
        return Err(UpidParseError::EmptyId);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(UpidParseError::IdTooLong(id.len()));
    }
    if let Some(character) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(UpidParseError::InvalidIdCharacter {
            id: id.to_owned(),
            character,
        });
    }
    Ok(())
}

/// Parses `ip:port` or `[ipv6]:port` with errors that name the bad part.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, UpidParseError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(UpidParseError::InvalidIp(text.to_owned()));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(UpidParseError::MissingPort(text.to_owned()));
        };
        let ip: std::net::Ipv6Addr = host
            .parse()
            .map_err(|_| UpidParseError::InvalidIp(host.to_owned()))?;
        (IpAddr::V6(ip), port)
    } else {
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(UpidParseError::MissingPort(text.to_owned()));
        };
        if host.contains(':') {
            return Err(UpidParseError::UnbracketedIpv6(text.to_owned()));
        }
        let ip: std::net::Ipv4Addr = host
            .parse()
            .map_err(|_| UpidParseError::InvalidIp(host.to_owned()))?;
        (IpAddr::V4(ip), port)
    };
    let port: u16 = port
        .parse()
        .map_err(|_| UpidParseError::InvalidPort(port.to_owned()))?;
    Ok(SocketAddr::new(host, port))
}

impl FromStr for Upid {
    type Err = UpidParseError;

    fn from_str(text: &str) -> Result<Upid, UpidParseError> {
        let Some((id, addr)) = text.split_once('@') else {
            return Err(UpidParseError::MissingAt(text.to_owned()));
        };
        validate_id(id)?;
        let addr = parse_socket_addr(addr)?;
        Ok(Upid {
            id: Arc::from(id),
            addr,
            incarnation: Incarnation::ANY,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&str, UpidParseError>) {
        let parsed = text.parse::<Upid>().map(|upid| upid.to_string());
        assert_eq!(parsed.as_deref().map_err(Clone::clone), expected, "{text}");
    }

    #[test]
    fn parses_and_prints() {
        check("master@127.0.0.1:5050", Ok("master@127.0.0.1:5050"));
        check("agent-1.x_y@[::1]:5051", Ok("agent-1.x_y@[::1]:5051"));
        check("a@[fe80::1]:0", Ok("a@[fe80::1]:0"));
    }

    #[test]
    fn errors_name_the_bad_part() {
        check(
            "master127.0.0.1:5050",
            Err(UpidParseError::MissingAt("master127.0.0.1:5050".into())),
        );
        check("@127.0.0.1:5050", Err(UpidParseError::EmptyId));
        check(
            "ma ster@127.0.0.1:1",
            Err(UpidParseError::InvalidIdCharacter {
                id: "ma ster".into(),
                character: ' ',
            }),
        );
        check(
            "m@127.0.0.1",
            Err(UpidParseError::MissingPort("127.0.0.1".into())),
        );
        check(
            "m@127.0.0.1:99999",
            Err(UpidParseError::InvalidPort("99999".into())),
        );
        check(
            "m@localhost:1",
            Err(UpidParseError::InvalidIp("localhost".into())),
        );
        check(
            "m@::1:5050",
            Err(UpidParseError::UnbracketedIpv6("::1:5050".into())),
        );
        check("m@[::1", Err(UpidParseError::InvalidIp("[::1".into())));
        check(
            "m@[::1]5050",
            Err(UpidParseError::MissingPort("[::1]5050".into())),
        );
        check(
            "m@[zz::1]:1",
            Err(UpidParseError::InvalidIp("zz::1".into())),
        );
        let long = format!("{}@127.0.0.1:1", "x".repeat(MAX_ID_BYTES + 1));
        check(&long, Err(UpidParseError::IdTooLong(MAX_ID_BYTES + 1)));
    }

    #[test]
    fn incarnations_are_kept_apart() {
        let typed: Upid = "m@127.0.0.1:1".parse().unwrap();
        assert_eq!(typed.incarnation(), Incarnation::ANY);
        let first = typed.with_incarnation(Incarnation(7));
        let second = typed.with_incarnation(Incarnation(8));
        assert_eq!(first.name(), second.name());
        assert_eq!(first.name().to_string(), first.to_string());
        let elsewhere: Upid = format!("{}@127.0.0.9:1", first.id()).parse().unwrap();
        assert_ne!(elsewhere.name(), first.name());
        assert_ne!(first, second);
        assert!(first.same_name(&second));
        assert!(Incarnation::ANY.admits(Incarnation(7)));
        assert!(Incarnation(7).admits(Incarnation(7)));
        assert!(!Incarnation(7).admits(Incarnation(8)));
        assert_eq!(format!("{first:?}"), "m@127.0.0.1:1#0000000000000007");
    }
}

/// Valid addresses for structure-aware fuzzing: ids from the characters
/// an id may hold, any socket address and incarnation.
#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Upid {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Upid> {
        const ALPHABET: &[u8] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
        let length = u.int_in_range(1..=MAX_ID_BYTES)?;
        let id: String = (0..length)
            .map(|_| u.choose(ALPHABET).map(|&byte| char::from(byte)))
            .collect::<arbitrary::Result<_>>()?;
        Upid::new(&id, u.arbitrary()?, u.arbitrary()?)
            .map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}
