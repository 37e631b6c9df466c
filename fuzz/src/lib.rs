//! What each fuzz target does with its input: everything Strata reads
//! from peers, clients, files and flags, fed arbitrary bytes. A panic, an
//! abort, a hang or a broken property is a finding; each is fixed with a
//! regression test in the crate it concerns.
//!
//! Properties checked besides "no panic": whatever decodes re-encodes to
//! something that decodes the same (wire messages, launcher frames);
//! parsed text prints as text that parses back the same (resources,
//! attributes, addresses); arithmetic on resources keeps its laws
//! (scalars add up, ranges and sets unite); a
//! recovered registry leaves the master's books consistent.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use strata_runtime::codec::{self, FrameDecoder};

/// Wire messages as a node reads them: frames from a stream, then a
/// hello or an envelope whose payload is one of the message types.
pub fn frames(data: &[u8]) {
    let mut decoder = FrameDecoder::new(codec::DEFAULT_MAX_FRAME_BYTES);
    // Split the input into chunks as a stream would deliver them.
    let split = data
        .first()
        .map_or(0, |first| usize::from(*first))
        .min(data.len());
    decoder.push(&data[..split]);
    decoder.push(&data[split..]);
    while let Ok(Some(body)) = decoder.next_frame() {
        let _ = codec::decode_hello(&body);
        if let Ok((_, payload)) = codec::decode_envelope(&body) {
            every_message(payload);
        }
    }
    let _ = decoder.finish();
}

/// One message body decoded as every message type.
pub fn messages(data: &[u8]) {
    every_message(data);
}

fn every_message(payload: &[u8]) {
    round_trip::<strata_protocol::ToMaster>(payload);
    round_trip::<strata_protocol::ToAgent>(payload);
    round_trip::<strata_protocol::ToScheduler>(payload);
    round_trip::<strata_protocol::ToExecutor>(payload);
}

/// Decodes `payload` as a `T`; what decodes must encode, and decode
/// again to what encodes the same.
fn round_trip<T>(payload: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Ok(value) = codec::decode::<T>("fuzz", payload) else {
        return;
    };
    let encoded = codec::encode(&value).expect("a decoded message encodes");
    let again: T = codec::decode("fuzz", &encoded).expect("an encoded message decodes");
    let encoded_again = codec::encode(&again).expect("a decoded message encodes");
    assert_eq!(encoded, encoded_again, "{value:?} changed in a round trip");
}

/// Resources in Mesos's text syntax, and their arithmetic: two
/// specifications separated by a newline.
pub fn resources(data: &[u8]) {
    use strata_protocol::Resources;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, second) = text.split_once('\n').unwrap_or((text, ""));
    let parse = |text: &str| -> Option<Resources> {
        let parsed: Resources = text.parse().ok()?;
        let printed = parsed.to_string();
        let again: Resources = printed.parse().unwrap_or_else(|error| {
            panic!("{printed:?} (printed from {text:?}) does not parse: {error}")
        });
        assert_eq!(again, parsed, "{text:?} printed as {printed:?}");
        Some(parsed)
    };
    let (Some(a), Some(b)) = (parse(first), parse(second)) else {
        return;
    };
    // Resources of one name and role have one kind where they enter the
    // master (an offer contains a task's only if the kinds agree); sums
    // of different kinds are not made.
    let kind = |value: &strata_protocol::Value| std::mem::discriminant(value);
    let clash = a.iter().any(|x| {
        b.iter()
            .any(|y| x.name == y.name && x.role == y.role && kind(&x.value) != kind(&y.value))
    });
    if clash {
        return;
    }
    let mut sum = a.clone();
    sum.add(&b);
    assert!(sum.contains(&a) && sum.contains(&b), "{a} + {b} = {sum}");
    let rest = sum
        .checked_sub(&a)
        .unwrap_or_else(|| panic!("{sum} - {a}: the sum does not contain a part"));
    // Ranges and sets add as unions, so only what `b` adds comes back;
    // scalars add up, so all of `b` does.
    assert!(b.contains(&rest), "{sum} - {a} = {rest}, more than {b}");
    let scalars_only = a
        .iter()
        .chain(b.iter())
        .all(|resource| matches!(resource.value, strata_protocol::Value::Scalar(_)));
    if scalars_only {
        assert!(rest.contains(&b), "{sum} - {a} = {rest}, less than {b}");
    }
    if let Some(difference) = a.checked_sub(&b) {
        assert!(a.contains(&difference), "{a} - {b} = {difference}");
    }
}

/// Attributes in Mesos's text syntax: what parses prints as text that
/// parses to what prints the same.
pub fn attributes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = text.parse::<strata_protocol::Attributes>() else {
        return;
    };
    let printed = parsed.to_string();
    let again: strata_protocol::Attributes = printed
        .parse()
        .unwrap_or_else(|error| panic!("{printed:?} (from {text:?}) does not parse: {error}"));
    assert_eq!(again.to_string(), printed, "{text:?}");
}

/// Process addresses, `id@ip:port`.
pub fn upid(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = text.parse::<strata_runtime::Upid>() else {
        return;
    };
    let printed = parsed.to_string();
    let again: strata_runtime::Upid = printed
        .parse()
        .unwrap_or_else(|error| panic!("{printed:?} (from {text:?}) does not parse: {error}"));
    assert_eq!(again, parsed, "{text:?}");
}

/// An agent's checkpoint files after a crash: the first byte picks the
/// kind of file.
pub fn checkpoints(data: &[u8]) {
    use strata_agent::checkpoint::{
        self, AgentCheckpoint, ExecutorCheckpoint, FrameworkCheckpoint, StreamCheckpoint,
        TaskCheckpoint,
    };
    let Some((kind, bytes)) = data.split_first() else {
        return;
    };
    let path = Path::new("checkpoint");
    match kind % 5 {
        0 => drop(checkpoint::parse::<AgentCheckpoint>(path, bytes)),
        1 => drop(checkpoint::parse::<FrameworkCheckpoint>(path, bytes)),
        2 => drop(checkpoint::parse::<TaskCheckpoint>(path, bytes)),
        3 => drop(checkpoint::parse::<ExecutorCheckpoint>(path, bytes)),
        _ => drop(checkpoint::parse::<StreamCheckpoint>(path, bytes)),
    }
}

/// The master's registry after a crash, recovered into the books: they
/// must stay consistent whatever the file said.
pub fn registry(data: &[u8]) {
    use strata_master::books::{Books, Input};
    let Ok(registry) = strata_master::registry::parse(Path::new("registry.json"), data) else {
        return;
    };
    let mut books = Books::new(strata_master::Config::default(), "fuzz");
    let now = std::time::Instant::now();
    books.recover(now, registry, 2);
    books.handle(now, Input::Tick);
    books.handle(now + std::time::Duration::from_secs(3600), Input::Tick);
    if let Err(violation) = books.check_invariants() {
        panic!("a recovered registry broke the books: {violation}");
    }
}

/// What arrives on the task launcher's socket, either way.
pub fn launcher(data: &[u8]) {
    use strata_agent::launcher::{FromLauncher, MAX_MESSAGE_BYTES, ToLauncher};
    let mut decoder = FrameDecoder::new(MAX_MESSAGE_BYTES);
    decoder.push(data);
    while let Ok(Some(body)) = decoder.next_frame() {
        round_trip::<ToLauncher>(&body);
        round_trip::<FromLauncher>(&body);
    }
}

type Handler =
    Box<dyn Fn(&strata_runtime::http::Request) -> strata_runtime::http::Response + Send + Sync>;

/// The master's endpoints over an empty cluster's snapshot, behind
/// authentication, built once.
fn master_http() -> &'static Handler {
    static HANDLER: OnceLock<Handler> = OnceLock::new();
    HANDLER.get_or_init(|| {
        let books = strata_master::books::Books::new(strata_master::Config::default(), "fuzz");
        let (publisher, snapshots) = strata_master::state::channel();
        let state = strata_master::state::State::of(&books, "master@127.0.0.1:5050", 0, 0);
        publisher.send_replace(Some(Arc::new(state)));
        // The receiver keeps the snapshot; the sender may go.
        drop(publisher);
        let credentials = strata_runtime::http_auth::HttpCredentials::parse(
            br#"{"credentials": [{"principal": "ops", "secret": "s3cret"}]}"#,
        )
        .expect("fixed credentials parse");
        Box::new(strata_runtime::http_auth::guard(
            Some(Arc::new(credentials)),
            strata_master::state::PUBLIC_PATHS,
            strata_master::state::routes(snapshots, Default::default()),
        ))
    })
}

/// An HTTP request head as the servers read it, then answered by the
/// master's endpoints.
pub fn http_request(data: &[u8]) {
    if let Ok(request) = strata_runtime::http::parse_head(data) {
        let _ = master_http()(&request);
    }
}

/// ACL and credentials files, then every decision on what parsed.
pub fn acls(data: &[u8]) {
    use strata_master::authorization::{Acls, Authorizer, DefaultDecision};
    let _ = strata_runtime::http_auth::HttpCredentials::parse(data);
    let Ok(acls) = Acls::parse(data) else {
        return;
    };
    let authorizer = Authorizer::new(acls, DefaultDecision::Deny);
    for principal in [None, Some("ops"), Some("")] {
        let _ = authorizer.may_register(principal, "*");
        let _ = authorizer.may_run_as(principal, "root");
        let _ = authorizer.may_teardown(principal, Some("ops"));
        let _ = authorizer.may_view_framework(principal, "nobody");
        let _ = authorizer.may_view_task(principal, "nobody");
    }
}
