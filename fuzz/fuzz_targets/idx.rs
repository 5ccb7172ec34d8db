//! Any bytes (raw or gzip) as an IDX images file and as a labels file.
#![no_main]
use dropnet::data::idx::{parse_bytes, IMAGES_MAGIC, LABELS_MAGIC};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = parse_bytes(data, Path::new("images"), IMAGES_MAGIC, 3, "images");
    let _ = parse_bytes(data, Path::new("labels"), LABELS_MAGIC, 1, "labels");
});
