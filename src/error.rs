//! The one error type of the library. Every message names the value, flag or file that is wrong.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in dropnet, with enough context to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A keep probability outside (0, 1] (or not a number).
    #[error("keep probability {value} {where_} is outside (0, 1]")]
    Keep { value: f64, where_: String },

    /// Two things whose shapes must agree do not.
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },

    /// A class label that does not fit the output width.
    #[error("label {label} at example {index} is out of range: the output has {classes} classes")]
    Label { label: usize, index: usize, classes: usize },

    /// A setting that cannot work: a value out of range, flags that contradict each other, a flag
    /// that would have no effect. The message names the flag.
    #[error("{0}")]
    Config(String),

    /// A value that is NaN or infinite where a finite number is required.
    #[error("{what} is not finite ({value})")]
    NotFinite { what: String, value: f64 },

    /// A data, model or recipe file whose content is wrong (the message says where in it).
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

    /// Reading or writing a file failed: `cannot read PATH: reason`.
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },

    /// A validation split as large as the training data (from `--val`, or a saved training state).
    #[error("a validation split of {val} examples leaves no training examples ({} has {examples})", origin.display())]
    ValidationSplit { val: usize, origin: PathBuf, examples: usize },

    /// Memory for something a file or flag asks for could not be reserved.
    #[error("not enough memory for {what} ({bytes} bytes)")]
    OutOfMemory { what: String, bytes: usize },
}

/// `Result` with dropnet's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for an error about a file's content.
pub fn file_error(path: &Path, message: impl Into<String>) -> Error {
    Error::File { path: path.to_path_buf(), message: message.into() }
}

/// Shorthand for a failed read of `path`.
pub fn read_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io { action: "read", path: path.to_path_buf(), source }
}

/// Shorthand for a failed write of `path`.
pub fn write_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io { action: "write", path: path.to_path_buf(), source }
}

/// Shorthand for a shape error.
pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Error {
    Error::Shape { op, detail: detail.into() }
}

/// `text` with every control character (C0, DEL, C1: escape sequences, line breaks, tabs) written
/// as `\u{..}`, so that text taken from a file cannot steer the terminal it is printed on or fake
/// a line of output. Messages go through this before they reach stderr.
pub fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// At most this many characters of a user's text are quoted in a message by default: enough to
/// recognise an `--arch` or a schedule, not megabytes of a forged recipe.
pub const QUOTE_CHARS: usize = 80;

/// `text` cut to its first `max_chars` characters and an ellipsis, for quoting in a message.
pub fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}… ({} characters)", &text[..end], text.chars().count()),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_control("a\u{1b}[31mb\nc\u{9b}d é"), "a\\u{1b}[31mb\\u{a}c\\u{9b}d é");
    }

    #[test]
    fn long_text_is_shortened_to_whole_characters() {
        assert_eq!(shorten("éééé", 4), "éééé");
        assert_eq!(shorten("ééééé", 4), "éééé… (5 characters)");
    }
}
