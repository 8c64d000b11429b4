//! The one error type of this crate: which field is wrong and why.
//!
//! Owns [`ConfigError`] and the helpers that build it. It never decides what is valid
//! (that is `file` and `validate`), and it never panics or formats numbers through floats.

use perpcore_types::NumError;

/// A configuration that could not be loaded, with the path of the offending field, e.g.
/// `instruments[2].brackets[1].mmr: must be in (0, 1)`.
///
/// Paths name fields as they are spelled in the file format (`floor`, `cap`, `base`,
/// `settle`, …). Errors that concern a whole document (syntax, I/O) use the document or
/// file name as the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// Where: `instruments[2].brackets[1].mmr`, `assets[3].symbol`, `csv line 17.cum`, …
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A decimal that did not parse exactly.
    pub(crate) fn num(field: impl Into<String>, e: NumError) -> Self {
        Self::new(field, e.to_string())
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;
