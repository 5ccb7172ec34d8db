//! Helpers shared by the integration tests: small data sets written to temporary folders, and the
//! `dropnet` binary.
#![allow(dead_code)]

use dropnet::data::idx::{encode, IMAGES_MAGIC, LABELS_MAGIC};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh empty folder under the target directory, named after the test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// 4×4 images of 3 classes: class c lights up row c (plus deterministic noise), so a working
/// trainer separates them easily and a broken one does not.
pub fn toy_images(n: usize, salt: usize) -> (Vec<u8>, Vec<u8>) {
    let mut pixels = Vec::with_capacity(n * 16);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i * 7 + salt) % 3;
        for p in 0..16 {
            let noise = ((i * 31 + p * 17 + salt * 13) % 61) as u8;
            pixels.push(if p / 4 == class { 180 + noise } else { noise });
        }
        labels.push(class as u8);
    }
    (pixels, labels)
}

/// Write an IDX data set (train and t10k) of toy images into `dir`, gzip-compressed or raw.
pub fn write_toy_idx(dir: &Path, n_train: usize, n_test: usize, compressed: bool) {
    for (prefix, n, salt) in [("train", n_train, 1), ("t10k", n_test, 2)] {
        let (pixels, labels) = toy_images(n, salt);
        let images = encode(IMAGES_MAGIC, &[n as u32, 4, 4], &pixels);
        let labels = encode(LABELS_MAGIC, &[n as u32], &labels);
        for (kind, bytes) in [("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)] {
            let (name, bytes) = if compressed {
                (format!("{prefix}-{kind}.gz"), gzip(&bytes))
            } else {
                (format!("{prefix}-{kind}"), bytes)
            };
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// Run `dropnet` with `args` in `dir`.
pub fn dropnet(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dropnet")).current_dir(dir).env_remove("DROPNET_DATA").args(args).output().unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last line of stdout as JSON.
pub fn last_json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_else(|| panic!("no output; stderr: {}", stderr(out)));
    serde_json::from_str(line).unwrap()
}

/// The real MNIST files the repository ships (data/mnist).
pub fn mnist_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

/// A folder named after the test holding the toy IDX data set in `toy/` (300 training, 90 test
/// examples of 16 features and 3 classes).
pub fn toy_dir(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::create_dir(dir.join("toy")).unwrap();
    write_toy_idx(&dir.join("toy"), 300, 90, true);
    dir
}

/// Flags of a small, fast run on the toy data of [`toy_dir`].
pub const TOY: [&str; 10] = ["--data", "toy", "--arch", "16-12-3", "--keep", "0.9,0.7", "--lr", "0.1", "--batch", "16"];

/// `train` with the toy flags, then `extra`.
pub fn toy_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["train"];
    v.extend_from_slice(&TOY);
    v.extend_from_slice(extra);
    v
}

/// A command that must fail: non-zero exit, no panic, stderr containing every `expected` piece.
pub fn assert_fails(out: &Output, expected: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "succeeded; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "exit status of a panic: {err}");
    for piece in expected {
        assert!(err.contains(piece), "missing '{piece}' in: {err}");
    }
}

/// Every file under `dir` with its bytes and permissions: a snapshot to compare after a command
/// that must not have changed anything.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                #[cfg(unix)]
                let mode = {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::metadata(&path).unwrap().permissions().mode()
                };
                #[cfg(not(unix))]
                let mode = 0;
                files.push((path.clone(), std::fs::read(&path).unwrap(), mode));
            }
        }
    }
    files.sort();
    files
}

/// The safetensors header of a model file as JSON.
pub fn header(bytes: &[u8]) -> serde_json::Value {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

/// A model file with its header replaced by `header` (padded to 8 bytes) and the same data.
pub fn with_header(bytes: &[u8], header: &str) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut text = header.as_bytes().to_vec();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// A model file whose header JSON `edit` changed.
pub fn edited(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut h = header(bytes);
    edit(&mut h);
    with_header(bytes, &h.to_string())
}

/// A metadata entry of a header, parsed from its JSON string.
pub fn meta(h: &serde_json::Value, key: &str) -> serde_json::Value {
    serde_json::from_str(h["__metadata__"][key].as_str().unwrap()).unwrap()
}

/// Set metadata entry `key` of a header to `value` serialised as JSON text.
pub fn set_meta(h: &mut serde_json::Value, key: &str, value: &serde_json::Value) {
    h["__metadata__"][key] = serde_json::Value::String(value.to_string());
}

/// Run `dropnet` with `args` in `dir`, killing it after `seconds`: a hang is a failure.
pub fn dropnet_within(dir: &Path, args: &[&str], seconds: u64) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_dropnet"))
        .current_dir(dir)
        .env_remove("DROPNET_DATA")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("dropnet {args:?} still ran after {seconds} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
