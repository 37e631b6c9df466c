//! Resources: what agents have, what is offered, what tasks use.
//!
//! A [`Resources`] value is a bag of named resources, each optionally
//! reserved for a role: scalars (`cpus:4`, `mem:4096`), ranges
//! (`ports:[31000-32000]`) and sets (`disks:{a,b}`). Scalars are exact
//! fixed-point numbers in thousandths, as Apache Mesos keeps three
//! decimals, so adding and removing `0.1` cpus a million times leaves no
//! drift. The text syntax is Mesos's: `cpus:4;mem:4096;ports:[31000-32000]`
//! and `cpus(prod):2` for a reservation; parse errors name the bad part.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The role of resources not reserved for anyone.
pub const UNRESERVED: &str = "*";

/// Largest scalar one resource may hold, in thousandths: 100 billion
/// units (100 PB of memory in MB). Sums over every agent of a cluster of
/// 100,000 stay far from overflow.
pub const MAX_SCALAR_MILLIS: u64 = 100_000_000_000_000;

/// Most resources (distinct names and roles) one bag holds where bags
/// enter: a handful is usual, and a peer's message may not make a bag
/// whose every operation walks half a million entries.
pub const MAX_ENTRIES: usize = 1_024;

/// Longest resource or role name accepted.
const MAX_NAME_BYTES: usize = 128;

/// A scalar amount in thousandths: `Scalar::from_millis(1500)` is 1.5.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Scalar(u64);

impl Scalar {
    pub const ZERO: Scalar = Scalar(0);

    pub const fn from_millis(millis: u64) -> Scalar {
        Scalar(millis)
    }

    /// A whole amount: `Scalar::whole(4)` is 4.
    pub const fn whole(units: u64) -> Scalar {
        Scalar(units.saturating_mul(1000))
    }

    pub const fn millis(self) -> u64 {
        self.0
    }

    /// The amount as a float, for ratios only (shares, percentages).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Whole units, rounded down.
    pub const fn floor(self) -> u64 {
        self.0 / 1000
    }

    pub fn checked_sub(self, other: Scalar) -> Option<Scalar> {
        self.0.checked_sub(other.0).map(Scalar)
    }

    pub fn saturating_sub(self, other: Scalar) -> Scalar {
        Scalar(self.0.saturating_sub(other.0))
    }

    pub fn saturating_add(self, other: Scalar) -> Scalar {
        Scalar(self.0.saturating_add(other.0))
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        let fraction = self.0 % 1000;
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:03}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl FromStr for Scalar {
    type Err = String;

    /// Parses a non-negative decimal, rounding to the nearest thousandth
    /// as Mesos does.
    fn from_str(text: &str) -> Result<Scalar, String> {
        let text = text.trim();
        let not_number = || format!("{text:?} is not a non-negative number");
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (text, ""),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(not_number());
        }
        let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if !all_digits(whole) || !all_digits(fraction) {
            return Err(not_number());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| format!("{text:?} is too large"))?
        };
        let mut millis: u64 = 0;
        for (position, digit) in fraction.bytes().take(3).enumerate() {
            millis += u64::from(digit - b'0') * 10u64.pow(2 - position as u32);
        }
        if fraction.len() > 3 && fraction.as_bytes()[3] >= b'5' {
            millis += 1;
        }
        whole
            .checked_mul(1000)
            .and_then(|scaled| scaled.checked_add(millis))
            .map(Scalar)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

/// A set of integers as disjoint, sorted, inclusive intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<(u64, u64)>", into = "Vec<(u64, u64)>")]
pub struct Ranges(Vec<(u64, u64)>);

impl TryFrom<Vec<(u64, u64)>> for Ranges {
    type Error = String;

    /// Sorted and merged in one pass (a peer may send any number of
    /// intervals in any order: inserting them one by one was quadratic).
    fn try_from(mut intervals: Vec<(u64, u64)>) -> Result<Ranges, String> {
        if let Some((begin, end)) = intervals.iter().find(|(begin, end)| begin > end) {
            return Err(format!("range {begin}-{end} ends before it begins"));
        }
        intervals.sort_unstable();
        let ranges = Ranges(coalesce(intervals));
        if ranges.0.len() > MAX_INTERVALS {
            return Err(format!(
                "{} separate ranges are more than the {MAX_INTERVALS} a value may hold",
                ranges.0.len()
            ));
        }
        Ok(ranges)
    }
}

/// Most separate intervals one ranges value holds (every other port of
/// 0-65535 is 32,768).
pub const MAX_INTERVALS: usize = 65_536;

/// Merges sorted intervals that overlap or touch.
fn coalesce(sorted: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (begin, end) in sorted {
        match merged.last_mut() {
            Some(last) if begin <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((begin, end)),
        }
    }
    merged.shrink_to_fit();
    merged
}

impl From<Ranges> for Vec<(u64, u64)> {
    fn from(ranges: Ranges) -> Vec<(u64, u64)> {
        ranges.0
    }
}

impl Ranges {
    /// One interval, `begin..=end`.
    pub fn interval(begin: u64, end: u64) -> Ranges {
        let mut ranges = Ranges::default();
        if begin <= end {
            ranges.0.push((begin, end));
        }
        ranges
    }

    pub fn intervals(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many integers are in the set.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(begin, end)| end - begin + 1).sum()
    }

    /// Adds `begin..=end`, merging with what it overlaps or touches.
    pub fn insert(&mut self, begin: u64, end: u64) {
        let mut merged = (begin, end);
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(b, e) in &self.0 {
            let touches = b <= merged.1.saturating_add(1) && merged.0 <= e.saturating_add(1);
            if touches {
                merged = (merged.0.min(b), merged.1.max(e));
            } else {
                kept.push((b, e));
            }
        }
        kept.push(merged);
        kept.sort_unstable();
        self.0 = kept;
    }

    pub fn union(&mut self, other: &Ranges) {
        if other.0.is_empty() {
            return;
        }
        let mut all = std::mem::take(&mut self.0);
        all.extend_from_slice(&other.0);
        all.sort_unstable();
        self.0 = coalesce(all);
    }

    /// Whether every integer of `other` is in `self`: one walk over
    /// both (each is sorted and disjoint, so an interval of `other` lies
    /// within one of `self` or is not contained).
    pub fn contains(&self, other: &Ranges) -> bool {
        let mut have = self.0.iter().peekable();
        'wanted: for &(begin, end) in &other.0 {
            while let Some(&&(b, e)) = have.peek() {
                if e < begin {
                    have.next();
                    continue;
                }
                if b <= begin && end <= e {
                    continue 'wanted;
                }
                return false;
            }
            return false;
        }
        true
    }

    /// Removes `other`; `None` unless `self` contains it. One walk over
    /// both.
    pub fn checked_sub(&self, other: &Ranges) -> Option<Ranges> {
        if !self.contains(other) {
            return None;
        }
        let mut result = Vec::with_capacity(self.0.len() + other.0.len());
        let mut taken = other.0.iter().peekable();
        for &(b, e) in &self.0 {
            // What is left of this interval starts here (none once an
            // interval taken ends at the largest integer).
            let mut start = Some(b);
            while let Some(&&(begin, end)) = taken.peek() {
                if begin > e {
                    break;
                }
                if let Some(from) = start
                    && from < begin
                {
                    result.push((from, begin - 1));
                }
                start = end.checked_add(1);
                taken.next();
            }
            if let Some(from) = start
                && from <= e
            {
                result.push((from, e));
            }
        }
        Some(Ranges(result))
    }

    /// The first `count` integers, if there are that many.
    pub fn take_first(&self, count: u64) -> Option<Ranges> {
        let mut left = count;
        let mut taken = Ranges::default();
        for &(begin, end) in &self.0 {
            if left == 0 {
                break;
            }
            let size = end - begin + 1;
            let used = size.min(left);
            taken.0.push((begin, begin + used - 1));
            left -= used;
        }
        (left == 0).then_some(taken)
    }
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (index, (begin, end)) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{begin}-{end}")?;
        }
        f.write_str("]")
    }
}

/// The value of one resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Value {
    Scalar(Scalar),
    Ranges(Ranges),
    Set(BTreeSet<String>),
}

impl Value {
    fn is_empty(&self) -> bool {
        match self {
            Value::Scalar(scalar) => scalar.is_zero(),
            Value::Ranges(ranges) => ranges.is_empty(),
            Value::Set(set) => set.is_empty(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::Ranges(_) => "ranges",
            Value::Set(_) => "set",
        }
    }

    /// Adds `more`, of the same kind, to this value.
    fn merge(&mut self, more: &Value) {
        match (self, more) {
            (Value::Scalar(have), Value::Scalar(more)) => *have = have.saturating_add(*more),
            (Value::Ranges(have), Value::Ranges(more)) => have.union(more),
            (Value::Set(have), Value::Set(more)) => have.extend(more.iter().cloned()),
            // Kinds are checked where resources enter; a mismatch here
            // would be a bug, and the existing value is kept.
            _ => debug_assert!(false, "resource kinds differ for one name"),
        }
    }

    fn contains(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Scalar(have), Value::Scalar(want)) => have >= want,
            (Value::Ranges(have), Value::Ranges(want)) => have.contains(want),
            (Value::Set(have), Value::Set(want)) => want.is_subset(have),
            _ => false,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Scalar(scalar) => write!(f, "{scalar}"),
            Value::Ranges(ranges) => write!(f, "{ranges}"),
            Value::Set(set) => {
                f.write_str("{")?;
                for (index, item) in set.iter().enumerate() {
                    if index > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(item)?;
                }
                f.write_str("}")
            }
        }
    }
}

/// The kind each well-known resource must have.
fn expected_kind(name: &str) -> Option<&'static str> {
    match name {
        "cpus" | "mem" | "disk" | "gpus" => Some("scalar"),
        "ports" => Some("ranges"),
        _ => None,
    }
}

/// One named resource, as serialised and as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    /// [`UNRESERVED`] when not reserved.
    pub role: String,
    pub value: Value,
}

/// A bag of resources. Empty values (zero scalars, empty ranges and sets)
/// are never stored, so equal bags compare equal.
///
/// A master keeps several bags per agent (its total, what is free, what
/// is offered and used), so a bag is small: its entries are one short
/// vector sorted by name then role, and the well-known names and the
/// unreserved role are not allocated at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<Resource>", into = "Vec<Resource>")]
pub struct Resources {
    /// Sorted by (name, role), one entry for each, none empty.
    entries: Vec<Entry>,
}

/// A resource's name or role; the well-known ones borrow a constant.
type Label = Cow<'static, str>;

/// The names and roles nearly every bag holds.
const WELL_KNOWN: [&str; 6] = ["cpus", "mem", "disk", "ports", "gpus", UNRESERVED];

fn well_known(text: &str) -> Option<&'static str> {
    WELL_KNOWN.iter().copied().find(|known| *known == text)
}

fn label(text: &str) -> Label {
    well_known(text).map_or_else(|| Cow::Owned(text.to_owned()), Cow::Borrowed)
}

fn owned_label(text: String) -> Label {
    well_known(&text).map_or(Cow::Owned(text), Cow::Borrowed)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Entry {
    name: Label,
    role: Label,
    value: Value,
}

/// Why resources could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resources at {part:?}: {reason}")]
pub struct ResourcesError {
    /// The offending part of the input.
    pub part: String,
    pub reason: String,
}

fn error(part: &str, reason: impl Into<String>) -> ResourcesError {
    ResourcesError {
        part: part.to_owned(),
        reason: reason.into(),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

/// A set item prints and parses back as itself in the text syntax.
fn valid_set_item(item: &str) -> bool {
    !item.is_empty()
        && item.trim() == item
        && !item
            .chars()
            .any(|c| c.is_control() || matches!(c, ',' | '{' | '}' | ';'))
}

fn valid_role(role: &str) -> bool {
    role == UNRESERVED || valid_name(role) && !role.starts_with('.') && !role.contains("..")
}

impl TryFrom<Vec<Resource>> for Resources {
    type Error = ResourcesError;

    fn try_from(list: Vec<Resource>) -> Result<Resources, ResourcesError> {
        let mut resources = Resources::default();
        for resource in list {
            resources.try_add_one(resource)?;
        }
        resources.entries.shrink_to_fit();
        Ok(resources)
    }
}

impl From<Resources> for Vec<Resource> {
    fn from(resources: Resources) -> Vec<Resource> {
        resources.iter().collect()
    }
}

impl Resources {
    pub fn new() -> Resources {
        Resources::default()
    }

    /// Adds one resource, checking its name, role and kind.
    pub fn try_add_one(&mut self, resource: Resource) -> Result<(), ResourcesError> {
        let part = format!("{}({})", resource.name, resource.role);
        if !valid_name(&resource.name) {
            return Err(error(
                &part,
                "resource names use letters, digits, '_', '-', '.' and '/'",
            ));
        }
        if !valid_role(&resource.role) {
            return Err(error(
                &part,
                "role names use letters, digits, '_', '-', '.' and '/', or are '*'",
            ));
        }
        if let Some(kind) = expected_kind(&resource.name)
            && kind != resource.value.kind()
        {
            return Err(error(
                &part,
                format!("{} is a {kind} resource", resource.name),
            ));
        }
        let place = self.find(&resource.name, &resource.role);
        let found = place.ok();
        let existing = found.map(|index| &self.entries[index].value);
        let already = match existing {
            Some(Value::Scalar(existing)) => existing.0,
            _ => 0,
        };
        if let Value::Scalar(amount) = &resource.value
            && amount.0.saturating_add(already) > MAX_SCALAR_MILLIS
        {
            return Err(error(
                &part,
                format!(
                    "{} is more than {} can hold",
                    Scalar(amount.0.saturating_add(already)),
                    Scalar(MAX_SCALAR_MILLIS)
                ),
            ));
        }
        if let Value::Set(items) = &resource.value
            && let Some(item) = items.iter().find(|item| !valid_set_item(item))
        {
            return Err(error(
                &part,
                format!(
                    "set item {item:?} is empty, has surrounding spaces or holds one of , {{ }} ; or a control character"
                ),
            ));
        }
        if found.is_none() && !resource.value.is_empty() && self.entries.len() >= MAX_ENTRIES {
            return Err(error(
                &part,
                format!("a bag holds at most {MAX_ENTRIES} resources (names and roles)"),
            ));
        }
        if let Some(existing) = existing
            && existing.kind() != resource.value.kind()
        {
            return Err(error(
                &part,
                format!(
                    "given as both {} and {}",
                    existing.kind(),
                    resource.value.kind()
                ),
            ));
        }
        if !resource.value.is_empty() {
            match place {
                Ok(index) => self.entries[index].value.merge(&resource.value),
                Err(index) => self.entries.insert(
                    index,
                    Entry {
                        name: owned_label(resource.name),
                        role: owned_label(resource.role),
                        value: resource.value,
                    },
                ),
            }
        }
        Ok(())
    }

    /// A scalar resource, e.g. `Resources::scalar("cpus", UNRESERVED, Scalar::whole(2))`.
    pub fn scalar(name: &str, role: &str, amount: Scalar) -> Resources {
        let mut resources = Resources::default();
        resources.add_value(&label(name), &label(role), &Value::Scalar(amount));
        resources
    }

    /// Unreserved cpus and memory, the common case in tests and examples.
    pub fn cpus_mem(cpus: Scalar, mem_mb: u64) -> Resources {
        let mut resources = Resources::scalar("cpus", UNRESERVED, cpus);
        resources.add(&Resources::scalar("mem", UNRESERVED, Scalar::whole(mem_mb)));
        resources
    }

    /// Where the entry for `name` and `role` is, or would go.
    fn find(&self, name: &str, role: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|entry| (&*entry.name, &*entry.role).cmp(&(name, role)))
    }

    fn add_value(&mut self, name: &Label, role: &Label, value: &Value) {
        if value.is_empty() {
            return;
        }
        match self.find(name, role) {
            Ok(index) => self.entries[index].value.merge(value),
            Err(index) => self.entries.insert(
                index,
                Entry {
                    name: name.clone(),
                    role: role.clone(),
                    value: value.clone(),
                },
            ),
        }
    }

    /// Adds every resource of `other`, unless one has another kind here
    /// than there (`cpus` a scalar here and a set there): bags from
    /// different peers are combined this way.
    pub fn try_add(&mut self, other: &Resources) -> Result<(), ResourcesError> {
        for Entry { name, role, value } in &other.entries {
            if let Ok(index) = self.find(name, role)
                && self.entries[index].value.kind() != value.kind()
            {
                return Err(error(
                    &format!("{name}({role})"),
                    format!(
                        "given as both {} and {}",
                        self.entries[index].value.kind(),
                        value.kind()
                    ),
                ));
            }
        }
        self.add(other);
        Ok(())
    }

    /// Adds every resource of `other`, whose kinds must agree with these
    /// (see [`Resources::try_add`]).
    pub fn add(&mut self, other: &Resources) {
        for Entry { name, role, value } in &other.entries {
            self.add_value(name, role, value);
        }
    }

    /// Whether `self` holds at least everything in `other`, role by role.
    pub fn contains(&self, other: &Resources) -> bool {
        other.entries.iter().all(|want| {
            self.find(&want.name, &want.role)
                .is_ok_and(|index| self.entries[index].value.contains(&want.value))
        })
    }

    /// `self` without `other`; `None` unless `self` contains `other`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        let mut result = self.clone();
        for Entry {
            name,
            role,
            value: want,
        } in &other.entries
        {
            let index = result.find(name, role).ok()?;
            let have = &result.entries[index].value;
            let left = match (have, want) {
                (Value::Scalar(have), Value::Scalar(want)) => {
                    Value::Scalar(have.checked_sub(*want)?)
                }
                (Value::Ranges(have), Value::Ranges(want)) => {
                    Value::Ranges(have.checked_sub(want)?)
                }
                (Value::Set(have), Value::Set(want)) => {
                    if !want.is_subset(have) {
                        return None;
                    }
                    Value::Set(have.difference(want).cloned().collect())
                }
                _ => return None,
            };
            if left.is_empty() {
                result.entries.remove(index);
            } else {
                result.entries[index].value = left;
            }
        }
        Some(result)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every resource, sorted by name then role.
    pub fn iter(&self) -> impl Iterator<Item = Resource> + '_ {
        self.entries.iter().map(|entry| Resource {
            name: entry.name.to_string(),
            role: entry.role.to_string(),
            value: entry.value.clone(),
        })
    }

    /// The total of a scalar resource over all roles.
    pub fn scalar_total(&self, name: &str) -> Scalar {
        // A bag holds a handful of entries: scanning them beats building
        // an owned key for a range lookup, and this runs on hot paths.
        self.entries
            .iter()
            .filter(|entry| entry.name == name)
            .filter_map(|entry| match &entry.value {
                Value::Scalar(scalar) => Some(*scalar),
                _ => None,
            })
            .fold(Scalar::ZERO, Scalar::saturating_add)
    }

    pub fn cpus(&self) -> Scalar {
        self.scalar_total("cpus")
    }

    pub fn mem_mb(&self) -> Scalar {
        self.scalar_total("mem")
    }

    pub fn disk_mb(&self) -> Scalar {
        self.scalar_total("disk")
    }

    pub fn gpus(&self) -> Scalar {
        self.scalar_total("gpus")
    }

    /// All ports over all roles.
    pub fn ports(&self) -> Ranges {
        let mut ports = Ranges::default();
        for entry in &self.entries {
            if let (true, Value::Ranges(ranges)) = (entry.name == "ports", &entry.value) {
                ports.union(ranges);
            }
        }
        ports
    }

    /// What a framework in `role` may be offered from these: the
    /// resources reserved for `role` and the unreserved ones.
    pub fn usable_by(&self, role: &str) -> Resources {
        self.filtered(|resource_role| resource_role == role || resource_role == UNRESERVED)
    }

    /// Only the unreserved resources.
    pub fn unreserved(&self) -> Resources {
        self.filtered(|role| role == UNRESERVED)
    }

    fn filtered(&self, keep: impl Fn(&str) -> bool) -> Resources {
        Resources {
            entries: self
                .entries
                .iter()
                .filter(|entry| keep(&entry.role))
                .cloned()
                .collect::<Vec<_>>()
                .into_boxed_slice()
                .into_vec(),
        }
    }

    /// The names of the scalar resources present, for share computations.
    pub fn scalar_names(&self) -> BTreeSet<&str> {
        self.entries
            .iter()
            .filter(|entry| matches!(entry.value, Value::Scalar(_)))
            .map(|entry| &*entry.name)
            .collect()
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, Entry { name, role, value }) in self.entries.iter().enumerate() {
            if index > 0 {
                f.write_str(";")?;
            }
            if role == UNRESERVED {
                write!(f, "{name}:{value}")?;
            } else {
                write!(f, "{name}({role}):{value}")?;
            }
        }
        Ok(())
    }
}

fn parse_ranges(part: &str, text: &str) -> Result<Ranges, ResourcesError> {
    let inner = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or_else(|| error(part, "ranges are written [begin-end,...]"))?;
    let mut intervals = Vec::new();
    for interval in inner.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (begin, end) = interval
            .split_once('-')
            .ok_or_else(|| error(part, format!("{interval:?} is not begin-end")))?;
        let number = |text: &str| {
            text.trim()
                .parse::<u64>()
                .map_err(|_| error(part, format!("{text:?} is not a whole number")))
        };
        let (begin, end) = (number(begin)?, number(end)?);
        if begin > end {
            return Err(error(part, format!("{interval:?} ends before it begins")));
        }
        intervals.push((begin, end));
    }
    Ranges::try_from(intervals).map_err(|reason| error(part, reason))
}

fn parse_set(part: &str, text: &str) -> Result<BTreeSet<String>, ResourcesError> {
    let inner = text
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| error(part, "sets are written {a,b,...}"))?;
    Ok(inner
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect())
}

impl FromStr for Resources {
    type Err = ResourcesError;

    /// Parses `name[(role)]:value;...` where a value is a number, ranges
    /// `[a-b,c-d]` or a set `{x,y}`. Empty parts are ignored; the same
    /// name and role twice add up.
    fn from_str(text: &str) -> Result<Resources, ResourcesError> {
        let mut resources = Resources::default();
        for part in text
            .split(';')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (key, value) = part
                .split_once(':')
                .ok_or_else(|| error(part, "expected name:value"))?;
            let key = key.trim();
            let (name, role) = match key.split_once('(') {
                Some((name, rest)) => {
                    let role = rest
                        .strip_suffix(')')
                        .ok_or_else(|| error(part, "a role is written name(role)"))?;
                    (name.trim(), role.trim())
                }
                None => (key, UNRESERVED),
            };
            let value = value.trim();
            let value = if value.starts_with('[') {
                Value::Ranges(parse_ranges(part, value)?)
            } else if value.starts_with('{') {
                Value::Set(parse_set(part, value)?)
            } else {
                Value::Scalar(
                    value
                        .parse::<Scalar>()
                        .map_err(|reason| error(part, reason))?,
                )
            };
            resources
                .try_add_one(Resource {
                    name: name.to_owned(),
                    role: role.to_owned(),
                    value,
                })
                .map_err(|e| error(part, e.reason))?;
        }
        resources.entries.shrink_to_fit();
        Ok(resources)
    }
}

#[cfg(test)]
mod tests {

    /// Found by fuzzing (`fuzz/`, target `resource_values`): a set item
    /// the text syntax cannot write (here the empty one) came in over the
    /// wire and printed as `{}`, which reads back as nothing.
    #[test]
    fn set_items_the_text_cannot_write_are_refused() {
        for item in ["", " x", "x ", "a,b", "{", "}", "a;b", "\n"] {
            let set = Value::Set([item.to_owned()].into_iter().collect());
            let wire = vec![Resource {
                name: "zones".into(),
                role: UNRESERVED.into(),
                value: set,
            }];
            let refused = Resources::try_from(wire).unwrap_err();
            assert!(refused.reason.contains("set item"), "{item:?}: {refused}");
        }
        let resources: Resources = "zones:{a, b-1,c.d}".parse().unwrap();
        assert_eq!(
            resources.to_string().parse::<Resources>().unwrap(),
            resources
        );
    }

    /// Found by fuzzing (`fuzz/`, target `resource_values`): sums of
    /// scalars near `u64::MAX` thousandths saturated, so a sum minus one
    /// part was less than the other part.
    #[test]
    fn scalars_are_bounded_where_they_enter() {
        let largest = Scalar::from_millis(MAX_SCALAR_MILLIS);
        let at_bound = format!("mem:{largest}");
        assert_eq!(
            at_bound.parse::<Resources>().unwrap().scalar_total("mem"),
            largest
        );
        let refused = "disk:18446744073709551.615"
            .parse::<Resources>()
            .unwrap_err();
        assert!(refused.reason.contains("more than"), "{refused}");
        let wire = vec![Resource {
            name: "disk".into(),
            role: UNRESERVED.into(),
            value: Value::Scalar(Scalar::from_millis(MAX_SCALAR_MILLIS + 1)),
        }];
        assert!(Resources::try_from(wire).is_err());
        // Parts of one resource add up to within the bound too.
        let twice = format!("mem:{largest};mem:0.001");
        assert!(twice.parse::<Resources>().is_err());
    }

    #[test]
    fn bags_that_disagree_on_a_kind_are_not_added() {
        let mut scalar: Resources = "zones:2".parse().unwrap();
        let set: Resources = "zones:{a}".parse().unwrap();
        let refused = scalar.try_add(&set).unwrap_err();
        assert!(refused.to_string().contains("scalar and set"), "{refused}");
        assert_eq!(scalar, "zones:2".parse().unwrap());
        scalar.try_add(&"zones:1;cpus:1".parse().unwrap()).unwrap();
        assert_eq!(scalar, "zones:3;cpus:1".parse().unwrap());
    }
    use super::*;

    fn r(text: &str) -> Resources {
        text.parse().unwrap()
    }

    fn check_parse(text: &str, expected: Result<&str, (&str, &str)>) {
        let parsed = text.parse::<Resources>();
        match (parsed, expected) {
            (Ok(resources), Ok(printed)) => assert_eq!(resources.to_string(), printed, "{text}"),
            (Err(e), Err((part, reason_contains))) => {
                assert_eq!(e.part, part, "{text}");
                assert!(e.reason.contains(reason_contains), "{text}: {}", e.reason);
            }
            (parsed, expected) => panic!("{text}: got {parsed:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn parses_mesos_syntax() {
        check_parse(
            "cpus:4;mem:4096;ports:[31000-32000]",
            Ok("cpus:4;mem:4096;ports:[31000-32000]"),
        );
        check_parse("cpus(prod):2; cpus:0.5", Ok("cpus:0.5;cpus(prod):2"));
        check_parse("cpus:0.1;cpus:0.2", Ok("cpus:0.3"));
        check_parse("disks:{b,a};gpus:1", Ok("disks:{a,b};gpus:1"));
        check_parse("ports:[1-2,3-5,10-10]", Ok("ports:[1-5,10-10]"));
        check_parse("cpus:0.0004", Ok(""));
        check_parse("cpus:1.2345", Ok("cpus:1.235"));
        check_parse("", Ok(""));
    }

    #[test]
    fn parse_errors_name_the_bad_part() {
        check_parse(
            "cpus:4;mem:lots",
            Err(("mem:lots", "not a non-negative number")),
        );
        check_parse("cpus:-1", Err(("cpus:-1", "not a non-negative number")));
        check_parse("cpus4", Err(("cpus4", "expected name:value")));
        check_parse("cpus(prod:2", Err(("cpus(prod:2", "name(role)")));
        check_parse("ports:[5-1]", Err(("ports:[5-1]", "ends before it begins")));
        check_parse("ports:[a-b]", Err(("ports:[a-b]", "not a whole number")));
        check_parse("ports:1000", Err(("ports:1000", "ranges resource")));
        check_parse("cpus:[1-2]", Err(("cpus:[1-2]", "scalar resource")));
        check_parse("c pus:1", Err(("c pus:1", "resource names")));
        check_parse("x:1;x:{a}", Err(("x:{a}", "both scalar and set")));
    }

    #[test]
    fn scalar_arithmetic_is_exact() {
        let tenth = r("cpus:0.1");
        let mut total = Resources::new();
        for _ in 0..1_000_000 {
            total.add(&tenth);
        }
        assert_eq!(total.cpus(), Scalar::whole(100_000));
        for _ in 0..1_000_000 {
            total = total.checked_sub(&tenth).unwrap();
        }
        assert!(total.is_empty());
        assert_eq!("0.125".parse::<Scalar>().unwrap().to_string(), "0.125");
        assert_eq!("3.10".parse::<Scalar>().unwrap().to_string(), "3.1");
    }

    #[test]
    fn containment_and_subtraction() {
        let agent = r("cpus:4;mem:4096;ports:[31000-32000]");
        assert!(agent.contains(&r("cpus:2;mem:1024;ports:[31000-31001]")));
        assert!(!agent.contains(&r("cpus:5")));
        assert!(!agent.contains(&r("ports:[30000-31000]")));
        assert!(!agent.contains(&r("gpus:1")));
        let left = agent
            .checked_sub(&r("cpus:2;mem:1024;ports:[31500-31600]"))
            .unwrap();
        assert_eq!(
            left.to_string(),
            "cpus:2;mem:3072;ports:[31000-31499,31601-32000]"
        );
        assert_eq!(agent.checked_sub(&r("mem:5000")), None);
        assert_eq!(left.ports().count(), 900);
    }

    /// Numbers below a bound, from a xorshift generator started at `seed`.
    fn numbers(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |bound| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        }
    }

    /// A bag is a sorted vector of labels that borrow the well-known
    /// names: a random walk of additions and subtractions over well-known
    /// and other names and roles, given in any order, agrees at every
    /// step with a plain map of (name, role) to value.
    #[test]
    fn bags_agree_with_a_plain_map() {
        use std::collections::BTreeMap;
        use std::hash::{BuildHasher, RandomState};
        type Model = BTreeMap<(String, String), Value>;
        fn model_add(model: &mut Model, resource: &Resource) {
            let key = (resource.name.clone(), resource.role.clone());
            match (model.get_mut(&key), &resource.value) {
                (Some(Value::Scalar(have)), Value::Scalar(more)) => {
                    *have = have.saturating_add(*more)
                }
                (Some(Value::Ranges(have)), Value::Ranges(more)) => have.union(more),
                (Some(Value::Set(have)), Value::Set(more)) => have.extend(more.iter().cloned()),
                (None, value) if !value.is_empty() => {
                    model.insert(key, value.clone());
                }
                _ => {}
            }
        }
        let mut next = numbers(0x9e37_79b9_7f4a_7c15_u64);
        let names = ["mem", "cpus", "zones", "ports", "gpus", "fpgas", "disk"];
        let roles = [UNRESERVED, "prod", "batch/x", "a"];
        let hasher = RandomState::new();
        for _ in 0..200 {
            let mut bag = Resources::new();
            let mut model = Model::new();
            for _ in 0..30 {
                let mut part = Vec::new();
                for _ in 0..1 + next(4) {
                    let name = names[next(names.len() as u64) as usize];
                    let value = match name {
                        "ports" => {
                            let begin = next(50);
                            Value::Ranges(Ranges::interval(begin, begin + next(5)))
                        }
                        "zones" => Value::Set([format!("z{}", next(3))].into_iter().collect()),
                        _ => Value::Scalar(Scalar::from_millis(next(3000))),
                    };
                    part.push(Resource {
                        name: name.to_owned(),
                        role: roles[next(roles.len() as u64) as usize].to_owned(),
                        value,
                    });
                }
                // Built in the order given and in the reverse: the same bag.
                let forward = Resources::try_from(part.clone()).unwrap();
                let backward =
                    Resources::try_from(part.iter().rev().cloned().collect::<Vec<_>>()).unwrap();
                assert_eq!(forward, backward);
                assert_eq!(hasher.hash_one(&forward), hasher.hash_one(&backward));
                if next(3) == 0 {
                    let taken = bag.checked_sub(&forward);
                    assert_eq!(taken.is_some(), bag.contains(&forward), "{bag} - {forward}");
                    if let Some(left) = taken {
                        let mut back = left.clone();
                        back.add(&forward);
                        assert_eq!(back, bag, "({bag} - {forward}) + {forward}");
                        bag = left;
                        model = bag.iter().map(|r| ((r.name, r.role), r.value)).collect();
                    }
                } else {
                    bag.add(&forward);
                    for resource in &part {
                        model_add(&mut model, resource);
                    }
                }
                let listed: Vec<((String, String), Value)> =
                    bag.iter().map(|r| ((r.name, r.role), r.value)).collect();
                let expected: Vec<_> = model.clone().into_iter().collect();
                assert_eq!(listed, expected);
                assert_eq!(bag.to_string().parse::<Resources>().unwrap(), bag);
                let cpus = model
                    .iter()
                    .filter(|((name, _), _)| name == "cpus")
                    .map(|(_, value)| match value {
                        Value::Scalar(scalar) => *scalar,
                        _ => unreachable!(),
                    })
                    .fold(Scalar::ZERO, Scalar::saturating_add);
                assert_eq!(bag.cpus(), cpus);
                let prod = bag.usable_by("prod");
                assert!(bag.contains(&prod));
                assert!(
                    prod.iter()
                        .all(|r| r.role == "prod" || r.role == UNRESERVED)
                );
            }
        }
    }

    /// Ranges against the set of integers they stand for, over a small
    /// domain: union, containment and subtraction walk both lists once.
    #[test]
    fn ranges_agree_with_a_set_of_integers() {
        let mut next = numbers(0x2545_f491_4f6c_dd1d_u64);
        let random = |next: &mut dyn FnMut(u64) -> u64| {
            let intervals: Vec<(u64, u64)> = (0..next(6))
                .map(|_| {
                    let begin = next(40);
                    (begin, begin + next(6))
                })
                .collect();
            let set: BTreeSet<u64> = intervals.iter().flat_map(|&(b, e)| b..=e).collect();
            (Ranges::try_from(intervals).unwrap(), set)
        };
        let members = |ranges: &Ranges| -> BTreeSet<u64> {
            ranges
                .intervals()
                .iter()
                .flat_map(|&(b, e)| b..=e)
                .collect()
        };
        for _ in 0..5_000 {
            let (a, a_set) = random(&mut next);
            let (b, b_set) = random(&mut next);
            assert_eq!(members(&a), a_set);
            // Disjoint, sorted, not touching.
            assert!(a.intervals().windows(2).all(|w| w[0].1 + 1 < w[1].0), "{a}");
            assert_eq!(a.contains(&b), b_set.is_subset(&a_set), "{a} ⊇ {b}");
            match a.checked_sub(&b) {
                Some(left) => assert_eq!(members(&left), &a_set - &b_set, "{a} - {b}"),
                None => assert!(!b_set.is_subset(&a_set)),
            }
            let mut union = a.clone();
            union.union(&b);
            assert_eq!(members(&union), &a_set | &b_set, "{a} + {b}");
        }
        let top = Ranges::interval(u64::MAX - 3, u64::MAX);
        assert_eq!(
            top.checked_sub(&Ranges::interval(u64::MAX - 1, u64::MAX)),
            Some(Ranges::interval(u64::MAX - 3, u64::MAX - 2))
        );
    }

    /// What a peer sends is bounded before it is worked on: a bag of half
    /// a million names (given in the order that made each one an insert
    /// at the front) is refused past the bound, and ranges of any number
    /// of intervals in any order are sorted once.
    #[test]
    fn hostile_bags_and_ranges_are_bounded() {
        let descending_names = |count: usize| -> Vec<Resource> {
            (0..count)
                .rev()
                .map(|index| Resource {
                    name: format!("r{index:06}"),
                    role: UNRESERVED.into(),
                    value: Value::Scalar(Scalar::whole(1)),
                })
                .collect()
        };
        let refused = Resources::try_from(descending_names(500_000)).unwrap_err();
        assert!(refused.reason.contains("at most 1024"), "{refused}");
        let bag = Resources::try_from(descending_names(MAX_ENTRIES)).unwrap();
        assert_eq!(bag.iter().count(), MAX_ENTRIES);
        assert_eq!(bag.iter().next().unwrap().name, "r000000");
        // The same name again adds up; it is not a new entry.
        let mut same = bag.clone();
        same.add(&bag);
        assert_eq!(same.iter().count(), MAX_ENTRIES);

        let descending: Vec<(u64, u64)> = (0..MAX_INTERVALS as u64)
            .rev()
            .map(|index| (index * 2, index * 2))
            .collect();
        let ranges = Ranges::try_from(descending).unwrap();
        assert_eq!(ranges.intervals().len(), MAX_INTERVALS);
        assert_eq!(ranges.intervals()[0], (0, 0));
        let too_many: Vec<(u64, u64)> = (0..=MAX_INTERVALS as u64)
            .map(|index| (index * 2, index * 2))
            .collect();
        assert!(
            Ranges::try_from(too_many)
                .unwrap_err()
                .contains("more than")
        );
        let touching: Vec<(u64, u64)> = (0..1_000_000).rev().map(|index| (index, index)).collect();
        assert_eq!(
            Ranges::try_from(touching).unwrap(),
            Ranges::interval(0, 999_999)
        );
    }

    #[test]
    fn roles_are_kept_apart() {
        let agent = r("cpus:2;cpus(prod):2;mem(prod):1024;mem:1024");
        assert_eq!(agent.cpus(), Scalar::whole(4));
        assert_eq!(agent.usable_by("prod"), agent);
        assert_eq!(agent.usable_by("dev").to_string(), "cpus:2;mem:1024");
        // Reserved resources do not satisfy an unreserved request.
        assert!(!r("cpus(prod):4").contains(&r("cpus:1")));
    }

    #[test]
    fn serde_round_trip_checks_what_it_reads() {
        let resources = r("cpus:1.5;ports:[1-3]");
        let list: Vec<Resource> = resources.clone().into();
        assert_eq!(Resources::try_from(list).unwrap(), resources);
        let bad = vec![Resource {
            name: "cpus".into(),
            role: "*".into(),
            value: Value::Set(BTreeSet::new()),
        }];
        assert!(Resources::try_from(bad).is_err());
        assert!(Ranges::try_from(vec![(5, 1)]).is_err());
    }

    #[test]
    fn ranges_take_first() {
        let ports = Ranges::try_from(vec![(10, 11), (20, 25)]).unwrap();
        assert_eq!(
            ports.take_first(3).unwrap().intervals(),
            &[(10, 11), (20, 20)]
        );
        assert_eq!(ports.take_first(9), None);
    }
}
