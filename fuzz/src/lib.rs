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

/// Every target by name, as `fuzz_targets/` and `corpus/` name them.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("frames", frames),
    ("messages", messages),
    ("resources", resources),
    ("attributes", attributes),
    ("upid", upid),
    ("checkpoints", checkpoints),
    ("registry", registry),
    ("launcher", launcher),
    ("http_request", http_request),
    ("acls", acls),
    ("message_values", message_values),
    ("resource_values", resource_values),
    ("master_books", master_books),
    ("v1_calls", v1_calls),
    ("recordio", recordio),
];

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
    resource_laws(&a, &b);
}

/// The arithmetic laws of two bags of resources: a sum contains its
/// parts, and taking a part away leaves at most the other.
fn resource_laws(a: &strata_protocol::Resources, b: &strata_protocol::Resources) {
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
    sum.add(b);
    assert!(sum.contains(a) && sum.contains(b), "{a} + {b} = {sum}");
    let rest = sum
        .checked_sub(a)
        .unwrap_or_else(|| panic!("{sum} - {a}: the sum does not contain a part"));
    // Ranges and sets add as unions, so only what `b` adds comes back;
    // scalars add up, so all of `b` does.
    assert!(b.contains(&rest), "{sum} - {a} = {rest}, more than {b}");
    let scalars_only = a
        .iter()
        .chain(b.iter())
        .all(|resource| matches!(resource.value, strata_protocol::Value::Scalar(_)));
    if scalars_only {
        assert!(rest.contains(b), "{sum} - {a} = {rest}, less than {b}");
    }
    if let Some(difference) = a.checked_sub(b) {
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
    for at in [now, now + std::time::Duration::from_secs(3600)] {
        books.handle(at, Input::Tick);
        // What the tick left, as the master's shell sends it.
        while books.work_left() {
            books.handle(at, Input::Continue);
        }
    }
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
        let state = strata_master::state::snapshot(&books, "master@127.0.0.1:5050", 0, 0);
        publisher.publish(Arc::new(state), 0);
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
    // A head ends with a blank line; inputs without one get it, so the
    // fuzzer need not find it first.
    let mut head = data.to_vec();
    if !head.windows(4).any(|window| window == b"\r\n\r\n") {
        head.extend_from_slice(b"\r\n\r\n");
    }
    if let Ok(request) = strata_runtime::http::parse_head(&head) {
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

// Structure-aware targets: values generated with `arbitrary` from the
// input, so every input is a well-formed message or bag of resources
// and the fuzzer spends its time past the decoders' first checks.

use arbitrary::{Arbitrary, Unstructured};

/// A wire message generated as a value (the first byte picks its type),
/// encoded, then mutated as the rest of the input says. Every value must
/// come back from its encoding the same; the mutated bytes must decode
/// cleanly or fail cleanly, and round trip when they decode.
pub fn message_values(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(kind) = u.int_in_range(0..=3u8) else {
        return;
    };
    match kind {
        0 => value_round_trip::<strata_protocol::ToMaster>(&mut u),
        1 => value_round_trip::<strata_protocol::ToAgent>(&mut u),
        2 => value_round_trip::<strata_protocol::ToScheduler>(&mut u),
        _ => value_round_trip::<strata_protocol::ToExecutor>(&mut u),
    }
}

fn value_round_trip<'a, T>(u: &mut Unstructured<'a>)
where
    T: Arbitrary<'a> + serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(value) = T::arbitrary(u) else {
        return;
    };
    let encoded = codec::encode(&value).unwrap_or_else(|error| panic!("{value:?}: {error}"));
    let decoded: T = codec::decode("fuzz", &encoded)
        .unwrap_or_else(|error| panic!("{value:?} encoded does not decode: {error}"));
    assert_eq!(decoded, value, "a message changed in a round trip");
    let mutated = mutate(u, encoded);
    round_trip::<T>(&mutated);
    // The same bytes as a peer's stream delivers them: framed, inside an
    // envelope.
    frames(&mutated);
}

/// Overwrites, inserts and cuts bytes of `bytes` as the input says.
fn mutate(u: &mut Unstructured<'_>, mut bytes: Vec<u8>) -> Vec<u8> {
    let mut edits = 0;
    while edits < 16 && u.arbitrary().unwrap_or(false) {
        edits += 1;
        let Ok(position) = u.choose_index(bytes.len() + 1) else {
            break;
        };
        let byte: u8 = u.arbitrary().unwrap_or(0xff);
        match u.int_in_range(0..=2u8).unwrap_or(0) {
            0 if position < bytes.len() => bytes[position] = byte,
            1 => bytes.insert(position, byte),
            _ => bytes.truncate(position),
        }
    }
    bytes
}

/// Two bags of resources generated as values: their arithmetic laws,
/// their text printed and parsed back, and their wire encoding.
pub fn resource_values(data: &[u8]) {
    use strata_protocol::Resources;
    let mut u = Unstructured::new(data);
    let (Ok(a), Ok(b)) = (Resources::arbitrary(&mut u), Resources::arbitrary(&mut u)) else {
        return;
    };
    for bag in [&a, &b] {
        let printed = bag.to_string();
        let parsed: Resources = printed
            .parse()
            .unwrap_or_else(|error| panic!("{bag:?} printed as {printed:?}: {error}"));
        assert_eq!(&parsed, bag, "printed as {printed:?}");
        let encoded = codec::encode(bag).expect("resources encode");
        let decoded: Resources = codec::decode("fuzz", &encoded).expect("resources decode");
        assert_eq!(&decoded, bag);
    }
    resource_laws(&a, &b);
}

/// A hostile or confused cluster talking to the master's books: a
/// sequence of messages from agents, schedulers, executors and an
/// operator (each under an id its certificate owns, as the runtime
/// ensures), ticks as time passes, and exits. The books' invariants
/// must hold after every step.
pub fn master_books(data: &[u8]) {
    use std::time::{Duration, Instant};
    use strata_master::books::{Books, Input};
    use strata_runtime::tls::{PeerIdentity, Role};
    use strata_runtime::{Incarnation, Upid};

    let peer = |id: &str, host: u8, role: Role, name: &str| {
        let address = std::net::SocketAddr::from(([127, 0, 0, host], 5051));
        let upid = Upid::new(id, address, Incarnation(1)).expect("fixed addresses are valid");
        (upid, Arc::new(PeerIdentity::simulated(Some(role), name)))
    };
    let peers = [
        peer("agent-1", 1, Role::Agent, "a1"),
        peer("agent-2", 2, Role::Agent, "a2"),
        peer("agent-1", 3, Role::Agent, "a1"),
        peer("scheduler-1", 4, Role::Framework, "p1"),
        peer("scheduler-2", 5, Role::Framework, "p2"),
        peer("scheduler-3", 6, Role::Framework, "p1"),
        peer("executor-1", 1, Role::Executor, "m-F1/e1"),
        peer("operator", 7, Role::Operator, "ops"),
    ];
    let mut u = Unstructured::new(data);
    let mut books = Books::new(strata_master::Config::default(), "m");
    let mut now = Instant::now();
    for _ in 0..64 {
        if u.is_empty() {
            break;
        }
        let Ok(step) = u.int_in_range(0..=10u8) else {
            break;
        };
        let input = match step {
            0..=6 => {
                let Ok((from, sender)) = u.choose(&peers) else {
                    break;
                };
                let Ok(message) = strata_protocol::ToMaster::arbitrary(&mut u) else {
                    break;
                };
                Input::Received {
                    from: from.clone(),
                    sender: sender.clone(),
                    message,
                }
            }
            7 => match u.choose(&peers) {
                Ok((from, _)) => Input::Exited(from.clone()),
                Err(_) => break,
            },
            8 => {
                // Offers the shell could not send, to whichever peer.
                let outstanding: Vec<_> = books.offers().keys().cloned().collect();
                let (Ok((to, _)), Ok(offer)) = (u.choose(&peers), u.choose(&outstanding)) else {
                    break;
                };
                Input::OffersNotSent {
                    to: to.clone(),
                    offers: vec![offer.clone()],
                }
            }
            _ => {
                let millis = u.int_in_range(0..=120_000u64).unwrap_or(0);
                now += Duration::from_millis(millis);
                Input::Tick
            }
        };
        if std::env::var_os("STRATA_FUZZ_TRACE").is_some() {
            eprintln!("{input:?}");
        }
        books.handle(now, input);
        // What a tick left, as the master's shell sends it.
        while books.work_left() {
            books.handle(now, Input::Continue);
        }
        if let Err(violation) = books.check_invariants() {
            panic!("the books broke: {violation}");
        }
    }
}

/// A v1 scheduler API call as a framework POSTs it (and the same bytes as
/// an operator or an executor API call): parsed, and when it is valid
/// translated into the message it stands for, which must encode and
/// decode like any other.
pub fn v1_calls(data: &[u8]) {
    use strata_api::scheduler::{Call, Translated};
    // The same bytes as an operator call: parsed and checked, or refused.
    if let Ok(call) = strata_api::operator::Call::parse(data) {
        let _ = call.kind().name();
    }
    // And as an executor's call: what it translates to travels like any
    // other message.
    if let Ok(message) =
        strata_api::executor::Call::parse(data).and_then(|call| call.to_protocol())
    {
        let encoded = codec::encode(&message).expect("a translated call encodes");
        let decoded: strata_protocol::ToAgent =
            codec::decode("fuzz", &encoded).expect("a translated call decodes");
        assert_eq!(decoded, message);
    }
    let Ok(call) = Call::parse(data) else {
        return;
    };
    let _ = call.framework_id();
    if let Some(subscribe) = &call.subscribe {
        let _ = subscribe.framework_info.to_protocol();
    }
    let framework_id = strata_protocol::FrameworkId::new("m-F1").expect("a valid id");
    if let Ok(Translated::ToMaster(message)) = call.to_protocol(&framework_id) {
        let encoded = codec::encode(&message).expect("a translated call encodes");
        let decoded: strata_protocol::ToMaster =
            codec::decode("fuzz", &encoded).expect("a translated call decodes");
        assert_eq!(decoded, message);
    }
}

/// A RecordIO stream as an HTTP body delivers it, in two chunks: the
/// records read, written again, read back the same.
pub fn recordio(data: &[u8]) {
    use strata_api::recordio::{RecordReader, encode};
    let split = data
        .first()
        .map_or(0, |first| usize::from(*first))
        .min(data.len());
    let mut reader = RecordReader::new(1 << 16);
    let mut records = Vec::new();
    'chunks: for chunk in [&data[..split], &data[split..]] {
        reader.push(chunk);
        loop {
            match reader.next_record() {
                Ok(Some(record)) => records.push(record),
                Ok(None) => break,
                Err(_) => break 'chunks,
            }
        }
    }
    let _ = reader.finish();
    let written: Vec<u8> = records.iter().flat_map(|record| encode(record)).collect();
    let mut again = RecordReader::new(1 << 16);
    again.push(&written);
    for record in &records {
        assert_eq!(again.next_record().as_ref(), Ok(&Some(record.clone())));
    }
    assert_eq!(again.next_record(), Ok(None));
    assert_eq!(again.finish(), Ok(()));
}
