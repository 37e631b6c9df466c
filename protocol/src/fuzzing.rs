//! Arbitrary values of the wire types, for structure-aware fuzzing (the
//! `arbitrary` feature). Types whose values are checked where they enter
//! (ids, ranges, resources) are generated valid, so a fuzzer spends its
//! inputs on what a peer could really send; the rest derive `Arbitrary`
//! where they are declared.

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::ids::{AgentId, ExecutorId, FrameworkId, MAX_ID_BYTES, OfferId, TaskId};
use crate::resources::{Ranges, Resource, Resources, UNRESERVED, Value};

/// An id: mostly a familiar one, so that generated messages name agents,
/// frameworks, offers and tasks that exist (`familiar` and a small
/// counter: ids as a master with prefix `m` hands them out, `m-S1`,
/// `m-F2`, `m-O3`, and as frameworks name tasks, `t1`); otherwise any
/// text made valid: without control characters and path separators, at
/// most [`MAX_ID_BYTES`] long, never empty, `.` or `..`.
fn id_text(u: &mut Unstructured<'_>, familiar: &str) -> Result<String> {
    if u.ratio(3, 4)? {
        return Ok(format!("{familiar}{}", u.int_in_range(1..=4)?));
    }
    let text: String = u.arbitrary()?;
    let mut id = String::new();
    for c in text
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '/' | '\\'))
    {
        if id.len() + c.len_utf8() > MAX_ID_BYTES {
            break;
        }
        id.push(c);
    }
    if id.is_empty() || id == "." || id == ".." {
        id.insert(0, 'x');
    }
    Ok(id)
}

macro_rules! arbitrary_id {
    ($($name:ident $familiar:literal),*) => {$(
        impl<'a> Arbitrary<'a> for $name {
            fn arbitrary(u: &mut Unstructured<'a>) -> Result<$name> {
                $name::new(id_text(u, $familiar)?).map_err(|_| arbitrary::Error::IncorrectFormat)
            }
        }
    )*};
}

arbitrary_id!(AgentId "m-S", FrameworkId "m-F", OfferId "m-O", TaskId "t", ExecutorId "e");

impl<'a> Arbitrary<'a> for Ranges {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Ranges> {
        let intervals: Vec<(u64, u64)> = u.arbitrary()?;
        let ordered = intervals
            .into_iter()
            .map(|(a, b)| (a.min(b), a.max(b)))
            .collect::<Vec<_>>();
        Ranges::try_from(ordered).map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}

/// Names from the resources agents offer, and some of any valid shape.
fn resource_name(u: &mut Unstructured<'_>) -> Result<String> {
    const COMMON: [&str; 6] = ["cpus", "mem", "disk", "ports", "gpus", "ephemeral_ports"];
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./";
    if u.ratio(3, 4)? {
        return Ok((*u.choose(&COMMON)?).to_owned());
    }
    let length = u.int_in_range(1..=12)?;
    (0..length)
        .map(|_| u.choose(ALPHABET).map(|&byte| char::from(byte)))
        .collect()
}

impl<'a> Arbitrary<'a> for Resource {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Resource> {
        let name = resource_name(u)?;
        let role = if u.ratio(2, 3)? {
            UNRESERVED.to_owned()
        } else {
            resource_name(u)?
        };
        Ok(Resource {
            name,
            role,
            value: Value::arbitrary(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Resources {
    /// Resources as a peer could send them: what `try_add_one` refuses
    /// (an invalid name or role, a kind clashing with one already added)
    /// is left out.
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Resources> {
        let mut resources = Resources::new();
        for resource in u.arbitrary_iter::<Resource>()? {
            let _ = resources.try_add_one(resource?);
        }
        Ok(resources)
    }
}
