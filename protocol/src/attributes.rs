//! Agent attributes: facts about a node that frameworks place by
//! (`rack:r1;zone:a;ssd:true;generation:3`).
//!
//! Values are text or scalars, as in Mesos's `--attributes`. Parse errors
//! name the bad part.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::resources::Scalar;

/// One attribute's value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum AttributeValue {
    Text(String),
    Scalar(Scalar),
}

impl AttributeValue {
    /// Reads a value as Mesos does: a number is a scalar, anything else text.
    pub fn parse(text: &str) -> AttributeValue {
        match text.parse::<Scalar>() {
            Ok(scalar) => AttributeValue::Scalar(scalar),
            Err(_) => AttributeValue::Text(text.to_owned()),
        }
    }

    /// The value as text, for comparisons with text from users.
    pub fn as_text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttributeValue::Text(text) => f.write_str(text),
            AttributeValue::Scalar(scalar) => write!(f, "{scalar}"),
        }
    }
}

/// An agent's attributes, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Attributes(BTreeMap<String, AttributeValue>);

/// Why an attribute spec could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid attributes at {part:?}: {reason}")]
pub struct AttributesError {
    pub part: String,
    pub reason: String,
}

impl Attributes {
    pub fn new() -> Attributes {
        Attributes::default()
    }

    pub fn get(&self, name: &str) -> Option<&AttributeValue> {
        self.0.get(name)
    }

    pub fn insert(&mut self, name: impl Into<String>, value: AttributeValue) {
        self.0.insert(name.into(), value);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &AttributeValue)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for Attributes {
    type Err = AttributesError;

    /// Parses `name:value;name:value`.
    fn from_str(text: &str) -> Result<Attributes, AttributesError> {
        let mut attributes = Attributes::default();
        for part in text
            .split(';')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let error = |reason: &str| AttributesError {
                part: part.to_owned(),
                reason: reason.to_owned(),
            };
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| error("expected name:value"))?;
            let (name, value) = (name.trim(), value.trim());
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(error(
                    "attribute names use letters, digits, '_', '-' and '.'",
                ));
            }
            if value.is_empty() {
                return Err(error("the value is empty"));
            }
            if value.chars().any(char::is_control) {
                return Err(error("the value contains a control character"));
            }
            if attributes.0.contains_key(name) {
                return Err(error("the attribute is given twice"));
            }
            attributes.insert(name, AttributeValue::parse(value));
        }
        Ok(attributes)
    }
}

impl fmt::Display for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (name, value)) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(";")?;
            }
            write!(f, "{name}:{value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_scalars() {
        let attributes: Attributes = "rack:r1; zone:a;generation:3;weight:1.5".parse().unwrap();
        assert_eq!(
            attributes.get("rack"),
            Some(&AttributeValue::Text("r1".into()))
        );
        assert_eq!(
            attributes.get("generation"),
            Some(&AttributeValue::Scalar(Scalar::whole(3)))
        );
        assert_eq!(
            attributes.to_string(),
            "generation:3;rack:r1;weight:1.5;zone:a"
        );
    }

    #[test]
    fn errors_name_the_bad_part() {
        for (text, part, reason) in [
            ("rack", "rack", "expected name:value"),
            ("rack:r1;zone:", "zone:", "empty"),
            ("ra ck:r1", "ra ck:r1", "attribute names"),
            ("rack:a;rack:b", "rack:b", "twice"),
        ] {
            let error = text.parse::<Attributes>().unwrap_err();
            assert_eq!(error.part, part, "{text}");
            assert!(error.reason.contains(reason), "{text}: {}", error.reason);
        }
    }
}
