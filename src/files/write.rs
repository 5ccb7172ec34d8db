//! Writing a file atomically: the bytes go to a temporary file in the same folder, are flushed to
//! disk, take the permissions of the file they replace, and are renamed over it. A reader sees the
//! old file or the new one, never a mix; a process killed at any point leaves the old file intact.

use crate::error::{file_error, write_error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name a save of `path` by process `pid` writes to: `.NAME.tmp-PID` beside it.
pub fn temporary_path(path: &Path, pid: u32) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| file_error(path, "not a file name"))?;
    Ok(folder_of(path).join(format!(".{}.tmp-{pid}", name.to_string_lossy())))
}

/// The folder a path names a file in (`.` for a bare file name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Write `bytes` to `path` atomically (see the module docs). Temporary files that earlier saves
/// of `path` left behind (their process is gone) are removed first.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().readonly()) {
        // read-only says "keep": the rename would replace it all the same
        let kept = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "it is read-only, so it is kept");
        return Err(write_error(path, kept));
    }
    remove_stale_temporaries(path);
    let tmp = temporary_path(path, std::process::id())?;
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        file.write_all(bytes)?;
        if let Ok(old) = std::fs::metadata(path) {
            file.set_permissions(old.permissions())?;
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        sync_folder(folder_of(path));
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        write_error(path, e)
    })
}

/// Flush the folder's entry for a renamed file to disk, so that the rename survives a power loss
/// (best effort: not every platform lets a folder be opened and synced).
fn sync_folder(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Remove `.NAME.tmp-PID` files beside `path` whose process no longer runs: saves that were
/// interrupted before their rename. On systems without `/proc` every such file but this process's
/// own is taken as stale.
pub fn remove_stale_temporaries(path: &Path) {
    let Some(name) = path.file_name() else { return };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(folder_of(path)) else { return };
    let me = std::process::id();
    let has_proc = Path::new("/proc/self").exists();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = pid == me || (has_proc && Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
