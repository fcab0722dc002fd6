//! The bearer token that guards the dashboard's write endpoints (drain,
//! undrain).
//!
//! The token is read once from a file (`dashboard.token_file`, which the
//! infra bootstrap fills with 64 random hex digits). It never appears in
//! `Debug` output or logs, and a presented token is compared in constant
//! time: how long the check takes does not tell how much of it was right.

use std::path::Path;

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use subtle::ConstantTimeEq;
use thiserror::Error;

pub use crate::secret::ParseError;
use crate::secret::{FileError, Secret};

/// Shorter tokens are refused at start-up: they could be guessed online.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The token file could not be used (its content is never named).
#[derive(Debug, Error)]
#[error("the dashboard token: {0}")]
pub struct TokenError(#[from] FileError);

/// A secret bearer token.
#[derive(Clone, Debug)]
pub struct Token(Secret);

/// What a request's `Authorization` header amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A bearer token that is not ours.
    Wrong,
    Allowed,
}

impl Token {
    /// The token in `path`, without the trailing newline editors add.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        Ok(Self(Secret::from_file(path, MIN_TOKEN_BYTES)?))
    }

    /// A token from its text (surrounding whitespace trimmed).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        Secret::parse(text, MIN_TOKEN_BYTES).map(Self)
    }

    /// Whether `presented` is this token, in time that depends only on the
    /// length of our own token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        // Copy into a buffer of our length so the comparison never
        // short-circuits on a length mismatch; the mismatch itself is folded
        // in as one more constant-time bit.
        let token = self.0.expose();
        let mut padded = vec![0u8; token.len()];
        let n = presented.len().min(padded.len());
        padded[..n].copy_from_slice(&presented[..n]);
        let same_len = u8::from(presented.len() == token.len()).ct_eq(&1);
        (padded.as_slice().ct_eq(token) & same_len).into()
    }

    /// Judges a request's headers: `Authorization: Bearer <token>` (the
    /// scheme is case-insensitive, as RFC 7235 says).
    pub fn check(&self, headers: &HeaderMap) -> Verdict {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Verdict::Missing;
        };
        let bytes = value.as_bytes();
        let Some((scheme, rest)) = bytes.split_first_chunk::<7>() else {
            return Verdict::Missing;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return Verdict::Missing;
        }
        if self.matches(rest.trim_ascii()) {
            Verdict::Allowed
        } else {
            Verdict::Wrong
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_the_exact_token_is_allowed() {
        let token = Token::parse(&format!("{SECRET}\n")).unwrap();
        assert!(token.matches(SECRET.as_bytes()));
        assert!(!token.matches(&SECRET.as_bytes()[..SECRET.len() - 1]));
        assert!(!token.matches(format!("{SECRET}0").as_bytes()));
        assert!(!token.matches(b""));
        let mut flipped = SECRET.as_bytes().to_vec();
        flipped[0] ^= 1;
        assert!(!token.matches(&flipped));
    }

    #[test]
    fn headers_are_judged_missing_wrong_or_allowed() {
        let token = Token::parse(SECRET).unwrap();
        assert_eq!(token.check(&HeaderMap::new()), Verdict::Missing);
        assert_eq!(token.check(&headers(&format!("Basic {SECRET}"))), Verdict::Missing);
        assert_eq!(token.check(&headers("Bearer")), Verdict::Missing);
        assert_eq!(token.check(&headers("Bearer nope")), Verdict::Wrong);
        assert_eq!(token.check(&headers("Bearer ")), Verdict::Wrong);
        assert_eq!(token.check(&headers(&format!("Bearer {SECRET}"))), Verdict::Allowed);
        assert_eq!(token.check(&headers(&format!("bearer  {SECRET} "))), Verdict::Allowed);
    }

    #[test]
    fn short_or_malformed_tokens_are_refused_and_never_printed() {
        let too_short = |len| ParseError::TooShort {
            len,
            min: MIN_TOKEN_BYTES,
        };
        assert_eq!(Token::parse("short\n").unwrap_err(), too_short(5));
        assert_eq!(Token::parse("").unwrap_err(), too_short(0));
        assert_eq!(
            Token::parse("0123456789 abcdef0123").unwrap_err(),
            ParseError::Malformed
        );
        let token = Token::parse(SECRET).unwrap();
        assert!(!format!("{token:?}").contains(SECRET));
    }

    #[test]
    fn a_token_file_is_read_and_its_problems_named() {
        let dir = std::env::temp_dir().join(format!("vipfleet-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, format!("{SECRET}\n")).unwrap();
        assert!(Token::from_file(&good).unwrap().matches(SECRET.as_bytes()));
        let short = dir.join("short");
        std::fs::write(&short, "abc").unwrap();
        let err = Token::from_file(&short).unwrap_err().to_string();
        assert!(err.contains("3 bytes") && !err.contains("abc"), "{err}");
        let missing = Token::from_file(&dir.join("absent")).unwrap_err().to_string();
        assert!(missing.contains("absent"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
