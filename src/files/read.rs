//! Reading untrusted files: only regular files, never more than a stated number of bytes, and
//! memory reserved for what the file actually holds (an allocation that fails is an error).

use crate::error::{file_error, read_error, Error, Result};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// `path` opened for reading, if it is a regular file. FIFOs, devices, sockets and folders are
/// refused by name before they are opened: opening a FIFO blocks until a writer appears, and a
/// device such as `/dev/zero` never ends.
pub fn open_regular(path: &Path) -> Result<File> {
    let kind = std::fs::metadata(path).map_err(|e| read_error(path, e))?.file_type();
    if !kind.is_file() {
        return Err(file_error(path, format!("{} dropnet reads only regular files", describe(kind))));
    }
    let file = File::open(path).map_err(|e| read_error(path, e))?;
    // The path may have been replaced between the two calls: check what was opened.
    let opened = file.metadata().map_err(|e| read_error(path, e))?;
    if !opened.is_file() {
        return Err(file_error(path, format!("{} dropnet reads only regular files", describe(opened.file_type()))));
    }
    Ok(file)
}

/// What a file that is not a regular file is, for messages.
fn describe(kind: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "is a FIFO (named pipe);";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "is a device;";
        }
        if kind.is_socket() {
            return "is a socket;";
        }
    }
    if kind.is_dir() {
        "is a folder;"
    } else {
        "is not a regular file;"
    }
}

/// The size of the regular file `file` (opened from `path`), refused when it exceeds `limit`.
pub fn checked_len(file: &File, path: &Path, limit: u64) -> Result<u64> {
    let len = file.metadata().map_err(|e| read_error(path, e))?.len();
    if len > limit {
        return Err(file_error(path, format!("{len} bytes, more than the {limit} a file of this kind may have")));
    }
    Ok(len)
}

/// The bytes of the regular file `path`, at most `limit` of them.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = checked_len(&file, path, limit)?;
    let mut bytes = Vec::new();
    reserve(&mut bytes, len as usize, || format!("reading {}", path.display()))?;
    // The file may grow while it is read: never take more than the limit.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| read_error(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(file_error(path, format!("grew past {limit} bytes while being read")));
    }
    Ok(bytes)
}

/// The text of the regular file `path` (UTF-8), at most `limit` bytes.
pub fn read_text_bounded(path: &Path, limit: u64) -> Result<String> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|e| {
        file_error(path, format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()))
    })
}

/// Room for `additional` more elements in `v`, or an error saying what the memory was for.
pub fn reserve<T>(v: &mut Vec<T>, additional: usize, what: impl FnOnce() -> String) -> Result<()> {
    v.try_reserve_exact(additional)
        .map_err(|_| Error::OutOfMemory { what: what(), bytes: additional.saturating_mul(std::mem::size_of::<T>()) })
}
