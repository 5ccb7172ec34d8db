//! IDX files (the MNIST family), gzip-compressed or raw: detected by content, not by name.
//!
//! Format (big-endian): magic `0x00000803` (images) or `0x00000801` (labels), the item count, for
//! images the row and column counts, then one unsigned byte per pixel or label.
//!
//! The header is read first and its sizes checked (their product must not overflow and must stay
//! within [`MAX_IDX_BYTES`]); then exactly the bytes it declares are read, and not one more: a
//! gzip stream that expands beyond them is refused as soon as the first extra byte appears, so a
//! small file cannot make dropnet decompress gigabytes. Concatenated gzip members (`cat a.gz b.gz`,
//! pigz, bgzip) are read as one stream.

use crate::error::{file_error, read_error, Result};
use crate::files::{checked_len, open_regular};
use crate::limits::MAX_IDX_BYTES;
use flate2::bufread::MultiGzDecoder;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// What an IDX file holds: the dimensions after the magic, and the payload bytes.
pub struct Idx {
    pub dims: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// Images as `(count, (rows, cols), pixels)`.
pub fn read_images(path: &Path) -> Result<(usize, (usize, usize), Vec<u8>)> {
    let idx = read(path, IMAGES_MAGIC, 3, "images")?;
    Ok((idx.dims[0], (idx.dims[1], idx.dims[2]), idx.bytes))
}

/// Labels, one byte each.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(read(path, LABELS_MAGIC, 1, "labels")?.bytes)
}

/// Read the IDX file `path` (a regular file), expecting `magic` and `dims` dimensions.
pub fn read(path: &Path, magic: u32, dims: usize, what: &str) -> Result<Idx> {
    let file = open_regular(path)?;
    let len = checked_len(&file, path, u64::MAX)?;
    let mut reader = BufReader::new(file);
    let gzip = reader.fill_buf().map_err(|e| read_error(path, e))?.starts_with(&[0x1f, 0x8b]);
    if gzip {
        parse(MultiGzDecoder::new(reader), path, magic, dims, what, None)
    } else {
        parse(reader, path, magic, dims, what, Some(len))
    }
}

/// [`read`] on bytes in memory (gzip or raw), `origin` naming them in messages.
pub fn parse_bytes(bytes: &[u8], origin: &Path, magic: u32, dims: usize, what: &str) -> Result<Idx> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        parse(MultiGzDecoder::new(bytes), origin, magic, dims, what, None)
    } else {
        parse(bytes, origin, magic, dims, what, Some(bytes.len() as u64))
    }
}

/// Header, then exactly the payload it declares. `raw_len` is the stream's length when it is
/// known (an uncompressed file): a mismatch is then found before the payload is read.
fn parse(mut reader: impl Read, path: &Path, magic: u32, dims: usize, what: &str, raw_len: Option<u64>) -> Result<Idx> {
    // The decoder reports bad or cut-off compressed data with these kinds; anything else is the
    // file system's.
    let stream_error = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            file_error(path, format!("gzip data is corrupt or truncated ({e})"))
        }
        _ => read_error(path, e),
    };
    let header_len = 4 + 4 * dims;
    let mut header = vec![0u8; header_len];
    let got = read_up_to(&mut reader, &mut header).map_err(stream_error)?;
    if got < header_len {
        return Err(file_error(path, format!("truncated: {got} bytes, an IDX {what} header needs {header_len}")));
    }
    let word = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    if word(0) != magic {
        return Err(file_error(
            path,
            format!("not an IDX {what} file: magic is 0x{:08x}, expected 0x{magic:08x}", word(0)),
        ));
    }
    let sizes: Vec<usize> = (0..dims).map(|d| word(4 + 4 * d) as usize).collect();
    let payload = sizes
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64))
        .filter(|&p| p + header_len as u64 <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            let shown: Vec<String> = sizes.iter().map(usize::to_string).collect();
            file_error(
                path,
                format!(
                    "the header declares {} {what} bytes, more than the {} an IDX file may hold",
                    shown.join(" x "),
                    MAX_IDX_BYTES - header_len as u64
                ),
            )
        })?;
    if let Some(len) = raw_len {
        let found = len.saturating_sub(header_len as u64);
        if found != payload {
            return Err(size_mismatch(path, payload, found, what));
        }
    }
    // Grows with the bytes that actually arrive, never past the declared payload plus one.
    let mut bytes = Vec::new();
    reader.take(payload + 1).read_to_end(&mut bytes).map_err(stream_error)?;
    if bytes.len() as u64 != payload {
        if bytes.len() as u64 > payload {
            return Err(file_error(
                path,
                format!("the data goes on past the {payload} {what} bytes its header declares"),
            ));
        }
        return Err(size_mismatch(path, payload, bytes.len() as u64, what));
    }
    Ok(Idx { dims: sizes, bytes })
}

fn size_mismatch(path: &Path, payload: u64, found: u64, what: &str) -> crate::Error {
    let kind = if found < payload { "truncated" } else { "trailing bytes" };
    file_error(path, format!("{kind}: the header promises {payload} bytes of {what}, the file has {found}"))
}

/// Fill `buf` as far as the stream goes; the number of bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
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
