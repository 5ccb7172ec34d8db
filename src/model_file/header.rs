//! The safetensors header beyond what the `safetensors` crate checks: a cap on its size, no key
//! twice, clear messages for the crate's errors, and the metadata written in key order.

use crate::error::{Error, Result};
use crate::limits::MAX_MODEL_HEADER_BYTES;
use safetensors::tensor::SafeTensorError;
use std::collections::BTreeMap;

/// The crate writes the metadata map in hash order, which differs from run to run. Rewrite it in
/// key order, so that the same model always gives the same bytes: the crate's header starts with
/// `{"__metadata__":` and the map; the sorted map has the same entries, hence the same length.
pub(super) fn sort_metadata(bytes: &mut [u8], metadata: &BTreeMap<String, String>) -> Result<()> {
    const START: &[u8] = b"{\"__metadata__\":";
    let sorted = serde_json::to_string(metadata).expect("strings serialise");
    let at = 8 + START.len();
    let end = at + sorted.len();
    let region = bytes.get(at..end).filter(|_| bytes[8..].starts_with(START));
    let same =
        region.and_then(|r| serde_json::from_slice::<BTreeMap<String, String>>(r).ok()).as_ref() == Some(metadata);
    if !same {
        return Err(Error::Config("cannot encode the model: the safetensors header has an unexpected layout".into()));
    }
    bytes[at..end].copy_from_slice(sorted.as_bytes());
    Ok(())
}

/// The header's length after checks the crate does not make: a cap on its size, and no key twice
/// (in the tensor table or in the metadata).
pub(super) fn check_header(bytes: &[u8]) -> std::result::Result<usize, String> {
    let Some(len) = bytes.get(..8) else {
        return Err(format!("{} bytes: too short for a safetensors file", bytes.len()));
    };
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    if len > MAX_MODEL_HEADER_BYTES as u64 {
        return Err(format!("the header claims {len} bytes, more than the {MAX_MODEL_HEADER_BYTES} dropnet reads"));
    }
    let len = len as usize;
    let header = bytes
        .get(8..8 + len)
        .ok_or_else(|| format!("truncated: the header claims {len} bytes, the file has {}", bytes.len() - 8))?;
    let mut de = serde_json::Deserializer::from_slice(header);
    serde::de::DeserializeSeed::deserialize(UniqueKeys { nested: true }, &mut de)
        .map_err(|e| format!("the safetensors header is invalid: {e}"))?;
    Ok(len)
}

/// Walks a JSON object and fails on a key that appears twice; with `nested`, checks the object
/// under `__metadata__` the same way.
struct UniqueKeys {
    nested: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if self.nested && key == "__metadata__" {
                map.next_value_seed(UniqueKeys { nested: false })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("the key '{key}' appears twice")));
            }
        }
        Ok(())
    }
}

/// A message for an error of the safetensors crate.
pub(super) fn describe(e: SafeTensorError) -> String {
    match e {
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor {name}: its data offsets overlap another tensor's or leave a gap")
        }
        SafeTensorError::TensorInvalidInfo => "a tensor's data offsets do not match its shape and dtype".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensors do not cover the file's data exactly (bytes missing or left over)".into()
        }
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows".into(),
        other => format!("not a valid safetensors file ({other})"),
    }
}
