//! The one error type of the library. Every message names the value or file that is wrong.

use std::path::PathBuf;

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

    /// A configuration that cannot work (e.g. a loss that needs another output activation).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A value that is NaN or infinite where a finite number is required.
    #[error("{what} is not finite ({value})")]
    NotFinite { what: String, value: f64 },

    /// A data, model or recipe file whose content is wrong.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

    /// Training produced a loss that is NaN or infinite.
    #[error(
        "training diverged at epoch {epoch}, step {step}: loss is {loss}; the model file keeps the last good weights"
    )]
    Diverged { epoch: usize, step: u64, loss: f64 },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// `Result` with dropnet's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for an error about a file's content.
pub(crate) fn file_error(path: &std::path::Path, message: impl Into<String>) -> Error {
    Error::File { path: path.to_path_buf(), message: message.into() }
}

/// Shorthand for an I/O error on a file.
pub(crate) fn io_error(path: &std::path::Path, source: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source }
}

/// Shorthand for a shape error.
pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Error {
    Error::Shape { op, detail: detail.into() }
}
