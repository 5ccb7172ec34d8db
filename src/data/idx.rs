//! IDX files (the MNIST family), gzip-compressed or raw: detected by content, not by name.
//!
//! Format (big-endian): magic `0x00000803` (images) or `0x00000801` (labels), the item count, for
//! images the row and column counts, then one unsigned byte per pixel or label.

use crate::error::{file_error, io_error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The bytes of a file, decompressed when they start with the gzip magic `1f 8b`.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| io_error(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| file_error(path, format!("gzip data is corrupt or truncated ({e})")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Check the header and the payload length; return the dimensions after the magic.
fn parse_header(path: &Path, bytes: &[u8], magic: u32, dims: usize, what: &str) -> Result<Vec<usize>> {
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(file_error(path, format!("truncated: {} bytes, an IDX {what} header needs {header}", bytes.len())));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(file_error(
            path,
            format!("not an IDX {what} file: magic is 0x{found:08x}, expected 0x{magic:08x}"),
        ));
    }
    let sizes: Vec<usize> = (0..dims).map(|d| be_u32(bytes, 4 + 4 * d) as usize).collect();
    let payload: usize = sizes.iter().product();
    if bytes.len() - header != payload {
        return Err(file_error(
            path,
            format!(
                "{}: the header promises {payload} bytes of {what}, the file has {}",
                if bytes.len() - header < payload { "truncated" } else { "trailing bytes" },
                bytes.len() - header
            ),
        ));
    }
    Ok(sizes)
}

/// Images as `(count, rows·cols, pixels)`.
pub fn read_images(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let bytes = read_maybe_gzip(path)?;
    let sizes = parse_header(path, &bytes, IMAGES_MAGIC, 3, "images")?;
    Ok((sizes[0], sizes[1] * sizes[2], bytes[16..].to_vec()))
}

/// Labels, one byte each.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gzip(path)?;
    parse_header(path, &bytes, LABELS_MAGIC, 1, "labels")?;
    Ok(bytes[8..].to_vec())
}

/// Bytes of an IDX file (for tests and tools that make small data sets).
pub fn encode(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}
