//! Identifiers: newtypes so an agent id is never passed where a task id is
//! wanted.
//!
//! Ids come from users and frameworks (task ids, executor ids) and end up
//! in sandbox paths and URLs, so every id is checked where it enters:
//! non-empty, at most 255 bytes, no control characters, no `/` or `\`,
//! and not `.` or `..`. Ids share their text, so copies (the master keeps
//! many) cost no allocation.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 255;

/// Why a text is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} {id:?} is longer than {MAX_ID_BYTES} bytes")]
    TooLong { kind: &'static str, id: String },
    #[error("{kind} {id:?} contains {character:?}, which ids may not contain")]
    InvalidCharacter {
        kind: &'static str,
        id: String,
        character: char,
    },
    #[error("{kind} may not be {id:?}")]
    Reserved { kind: &'static str, id: String },
}

pub(crate) fn validate(kind: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if id.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong {
            kind,
            id: id.chars().take(32).collect(),
        });
    }
    if id == "." || id == ".." {
        return Err(IdError::Reserved {
            kind,
            id: id.to_owned(),
        });
    }
    if let Some(character) = id
        .chars()
        .find(|c| c.is_control() || matches!(c, '/' | '\\'))
    {
        return Err(IdError::InvalidCharacter {
            kind,
            id: id.to_owned(),
            character,
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            /// A checked id.
            pub fn new(id: impl Into<String>) -> Result<$name, IdError> {
                let id = id.into();
                validate($kind, &id)?;
                Ok($name(std::sync::Arc::from(id)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(id: String) -> Result<$name, IdError> {
                $name::new(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;

            fn from_str(id: &str) -> Result<$name, IdError> {
                $name::new(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// An agent, assigned by the master when it first admits the agent and
    /// kept across the agent's restarts.
    AgentId,
    "agent id"
);
id_type!(
    /// A framework, assigned by the master at first registration.
    FrameworkId,
    "framework id"
);
id_type!(
    /// One offer, assigned by the master.
    OfferId,
    "offer id"
);
id_type!(
    /// A task, chosen by its framework; unique within the framework.
    TaskId,
    "task id"
);
id_type!(
    /// An executor, chosen by its framework; unique within the framework.
    ExecutorId,
    "executor id"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, expected: Result<(), &str>) {
        let result = TaskId::new(id).map(|_| ()).map_err(|e| e.to_string());
        match expected {
            Ok(()) => assert!(result.is_ok(), "{id:?}: {result:?}"),
            Err(contains) => {
                let message = result.expect_err(id);
                assert!(message.contains(contains), "{id:?}: {message}");
            }
        }
    }

    #[test]
    fn ids_are_checked() {
        check("task-1", Ok(()));
        check("web.3 (blue)", Ok(()));
        check("", Err("is empty"));
        check("a/b", Err("'/'"));
        check("a\\b", Err("'\\\\'"));
        check("..", Err("may not be"));
        check("a\nb", Err("'\\n'"));
        check(&"x".repeat(256), Err("longer than 255"));
    }

    #[test]
    fn deserialising_checks_too() {
        assert!(TaskId::try_from("t1".to_owned()).is_ok());
        assert!(TaskId::try_from("../etc".to_owned()).is_err());
    }
}
