//! `--keep-file`: keep probabilities per noise token as a JSON array.

use dropnet::dropout::Keep;
use dropnet::error::{file_error, Result};
use dropnet::files::read_text_bounded;
use dropnet::limits::MAX_TEXT_FILE_BYTES;
use std::path::Path;

/// Keep probabilities per noise token from a JSON file (a regular file of at most
/// [`MAX_TEXT_FILE_BYTES`]): each entry a number (for the whole token) or an array (one per unit,
/// or per channel of a feature map; the layer checks the count).
pub fn read_keep_file(path: &Path, noises: usize) -> Result<Vec<Vec<f64>>> {
    parse_keep_file(&read_text_bounded(path, MAX_TEXT_FILE_BYTES)?, path, noises)
}

/// [`read_keep_file`] on text; `origin` names it in messages. Values are checked by [`Keep`].
pub fn parse_keep_file(text: &str, origin: &Path, noises: usize) -> Result<Vec<Vec<f64>>> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| file_error(origin, format!("not valid JSON ({e})")))?;
    let entries = value
        .as_array()
        .ok_or_else(|| file_error(origin, "expected a JSON array, one entry per noise token (per dense layer)"))?;
    if entries.len() != noises {
        return Err(file_error(origin, format!("{} entries for {noises} noise tokens (dense layers)", entries.len())));
    }
    entries
        .iter()
        .enumerate()
        .map(|(l, entry)| {
            let values: Vec<f64> = match entry {
                serde_json::Value::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN)],
                serde_json::Value::Array(values) => values
                    .iter()
                    .map(|v| v.as_f64().ok_or_else(|| file_error(origin, format!("entry {l}: {v} is not a number"))))
                    .collect::<Result<_>>()?,
                other => {
                    return Err(file_error(origin, format!("entry {l}: {other} is neither a number nor an array")))
                }
            };
            Keep::per_unit(values.clone()).map_err(|e| file_error(origin, format!("entry {l}: {e}")))?;
            Ok(values)
        })
        .collect()
}
