//! Names of identities, secrets and lease records.
//!
//! One identity id (for example `m0-v3`) names both its secret and its lease record, so the
//! rule is the stricter of the two backends': Azure Key Vault's secret-name rule
//! `^[0-9a-zA-Z-]{1,127}$`, which is also a valid blob name.

use std::fmt;
use std::str::FromStr;

/// A validated secret / lease-record name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {len} characters long; at most 127 are allowed")]
    TooLong { len: usize },
    #[error(
        "name {name:?} has {bad:?} at position {position}; only 0-9, a-z, A-Z and '-' are allowed"
    )]
    BadCharacter {
        name: String,
        bad: char,
        position: usize,
    },
}

impl Name {
    /// Checks `s` against Key Vault's rule `^[0-9a-zA-Z-]{1,127}$`.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        let len = s.chars().count();
        if len > 127 {
            return Err(NameError::TooLong { len });
        }
        if let Some((position, bad)) = s
            .chars()
            .enumerate()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(NameError::BadCharacter {
                name: s,
                bad,
                position,
            });
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_key_vault_names() {
        for ok in ["m0-v0", "a", "A-9", &"x".repeat(127)] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(
            Name::new("x".repeat(128)),
            Err(NameError::TooLong { len: 128 })
        );
        for bad in ["m0_v0", "m0.v0", "a/b", "é", "a b", "../x"] {
            assert!(
                matches!(Name::new(bad), Err(NameError::BadCharacter { .. })),
                "{bad}"
            );
        }
    }
}
