//! Secrets the agent reads from files: the dashboard's bearer token and
//! the fleet's peer keys. One rule for both: the file's text, surrounding
//! whitespace trimmed (editors add a newline), at least a minimum length,
//! no whitespace or control characters inside (a key pasted across lines
//! is a mistake, not a secret). Errors name the file and the length, never
//! the content.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("it is {len} bytes; at least {min} are needed")]
    TooShort { len: usize, min: usize },
    #[error("it contains whitespace or control characters")]
    Malformed,
}

#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Invalid { path: PathBuf, source: ParseError },
}

/// Secret bytes; `Debug` shows only their length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

impl Secret {
    /// A secret from its text, checked against the rule above.
    pub fn parse(text: &str, min: usize) -> Result<Self, ParseError> {
        let secret = text.trim();
        if secret.len() < min {
            return Err(ParseError::TooShort { len: secret.len(), min });
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ParseError::Malformed);
        }
        Ok(Self(secret.as_bytes().to_vec()))
    }

    /// The secret in `path`.
    pub fn from_file(path: &Path, min: usize) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, min).map_err(|source| FileError::Invalid {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_text_is_trimmed_checked_and_never_shown() {
        let secret = Secret::parse(&format!("  {SECRET}\n"), 32).unwrap();
        assert_eq!(secret.expose(), SECRET.as_bytes());
        assert!(!format!("{secret:?}").contains(SECRET));
        assert_eq!(
            Secret::parse("short\n", 16),
            Err(ParseError::TooShort { len: 5, min: 16 })
        );
        assert_eq!(Secret::parse("0123456789 abcdef0123", 16), Err(ParseError::Malformed));
    }

    #[test]
    fn file_errors_name_the_file_but_not_the_content() {
        let dir = std::env::temp_dir().join(format!("vipfleet-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "abcdefgh").unwrap();
        let err = Secret::from_file(&short, 32).unwrap_err().to_string();
        assert!(
            err.contains("short") && err.contains("8 bytes") && !err.contains("abcdefgh"),
            "{err}"
        );
        let missing = Secret::from_file(&dir.join("absent"), 32).unwrap_err().to_string();
        assert!(missing.contains("absent"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
