//! Checking the files a run will write before it starts: each in an existing folder that can be
//! written, none of them a folder or a device, none the same file as an input or as another
//! output. "The same file" is the same device and inode when the file exists (hard links and
//! symbolic links included), or else the same canonical folder and name.

use super::write::{folder_of, temporary_path};
use crate::error::{Error, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A file a command reads or writes, with the flag that named it (for messages).
#[derive(Clone, Debug)]
pub struct NamedPath {
    pub flag: String,
    pub path: PathBuf,
}

impl NamedPath {
    pub fn new(flag: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self { flag: flag.into(), path: path.into() }
    }

    fn describe(&self) -> String {
        format!("{} {}", self.flag, self.path.display())
    }
}

/// What identifies a file: its device and inode, or where it would be created.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Identity {
    #[cfg(unix)]
    Inode {
        dev: u64,
        ino: u64,
    },
    #[cfg(not(unix))]
    Existing(PathBuf),
    ToBeCreated {
        folder: PathBuf,
        name: OsString,
    },
}

fn identity(path: &Path) -> Option<Identity> {
    if let Ok(meta) = std::fs::metadata(path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let _ = path;
            return Some(Identity::Inode { dev: meta.dev(), ino: meta.ino() });
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            return std::fs::canonicalize(path).ok().map(Identity::Existing);
        }
    }
    let folder = std::fs::canonicalize(folder_of(path)).ok()?;
    Some(Identity::ToBeCreated { folder, name: path.file_name()?.to_os_string() })
}

/// Whether two paths name the same file (see the module docs).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (identity(a), identity(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Check every output as the module docs say, against `inputs` and against each other.
pub fn check_outputs(outputs: &[NamedPath], inputs: &[NamedPath]) -> Result<()> {
    for out in outputs {
        check_writable(out)?;
        if let Some(input) = inputs.iter().find(|i| same_file(&i.path, &out.path)) {
            return Err(Error::Config(format!(
                "{} is the same file as {}: dropnet never writes over an input",
                out.describe(),
                input.describe()
            )));
        }
    }
    for (i, a) in outputs.iter().enumerate() {
        if let Some(b) = outputs[i + 1..].iter().find(|b| same_file(&a.path, &b.path)) {
            return Err(Error::Config(format!(
                "{} and {} are the same file: each output needs its own",
                a.describe(),
                b.describe()
            )));
        }
    }
    Ok(())
}

/// One output: a file name in an existing, writable folder, and not a folder or a device itself.
fn check_writable(out: &NamedPath) -> Result<()> {
    let path = &out.path;
    let bad = |why: String| Err(Error::Config(format!("{}: {why}", out.describe())));
    if path.file_name().is_none() {
        return bad("not a file name".into());
    }
    let folder = folder_of(path);
    match std::fs::metadata(folder) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return bad(format!("{} is not a folder", folder.display())),
        Err(_) => return bad(format!("the folder {} does not exist", folder.display())),
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_dir() {
            return bad("is a folder".into());
        }
        if !meta.is_file() {
            return bad("is not a regular file (dropnet writes only regular files)".into());
        }
        if meta.permissions().readonly() {
            return bad("is read-only, which says to keep it: dropnet does not replace it (choose another file)".into());
        }
    }
    // Whether the folder takes a new file: create and remove the save's own temporary name.
    let probe = temporary_path(path, std::process::id())?;
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(file) => {
            drop(file);
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => bad(format!("cannot write in {}: {e}", folder.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder in the system's temporary folder (a unit test has no target folder of its
    /// own); each test removes it when it passes.
    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dropnet-outputs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn hard_links_symbolic_links_and_spellings_are_the_same_file() {
        let d = dir("same");
        std::fs::write(d.join("a"), "x").unwrap();
        std::fs::hard_link(d.join("a"), d.join("b")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(d.join("a"), d.join("c")).unwrap();
        assert!(same_file(&d.join("a"), &d.join("b")));
        #[cfg(unix)]
        assert!(same_file(&d.join("a"), &d.join("c")));
        assert!(same_file(&d.join("new"), &d.join(".").join("new")));
        assert!(!same_file(&d.join("a"), &d.join("new")));
        assert!(!same_file(&d.join("new"), &d.join("other")));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn outputs_are_refused_with_the_reason() {
        let d = dir("refused");
        std::fs::write(d.join("data.csv"), "1,2\n").unwrap();
        let input = [NamedPath::new("--data", d.join("data.csv"))];
        let err = |outs: &[NamedPath]| check_outputs(outs, &input).unwrap_err().to_string();
        assert!(err(&[NamedPath::new("--out", d.join("data.csv"))]).contains("same file as --data"));
        assert!(err(&[NamedPath::new("--out", d.join("no/such/m"))]).contains("does not exist"));
        assert!(err(&[NamedPath::new("--out", &d)]).contains("is a folder"));
        let two = [NamedPath::new("--out", d.join("m")), NamedPath::new("--log", d.join("./m"))];
        assert!(err(&two).contains("--out") && err(&two).contains("--log"));
        assert!(check_outputs(&[NamedPath::new("--out", d.join("m"))], &input).is_ok());
        // a file its owner made read-only is kept, as cp and mv treat it
        std::fs::write(d.join("kept"), "model").unwrap();
        let mut read_only = std::fs::metadata(d.join("kept")).unwrap().permissions();
        read_only.set_readonly(true);
        std::fs::set_permissions(d.join("kept"), read_only).unwrap();
        assert!(err(&[NamedPath::new("--out", d.join("kept"))]).contains("read-only"));
        std::fs::remove_file(d.join("kept")).unwrap();
        // the writability probe leaves nothing behind
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
