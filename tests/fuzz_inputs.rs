//! The fuzz targets' inputs as tests: every seed in `fuzz/seeds/<target>/` is valid and must
//! parse; every input kept in `fuzz/regressions/<target>/` is hostile (a crash, hang or memory
//! blow-up found by fuzzing or by hand: an overflowing shape, a gzip bomb, JSON nested 20,000
//! deep, ...) and must be refused, without a panic.

use dropnet::data::idx::{parse_bytes, IMAGES_MAGIC, LABELS_MAGIC};

/// The CLI's options, as the binary compiles them.
#[path = "../src/bin/dropnet/options.rs"]
#[allow(dead_code)]
mod options;
use std::path::{Path, PathBuf};

fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<(PathBuf, Vec<u8>)> =
        entries.map(|e| e.unwrap().path()).map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect();
    files.sort();
    files
}

/// Each target's parser on `data`: whether it accepted it.
fn parse(target: &str, data: &[u8]) -> bool {
    let origin = Path::new("input");
    match target {
        "model_file" => dropnet::model_file::parse(data, origin).is_ok(),
        "idx" => {
            let images = parse_bytes(data, origin, IMAGES_MAGIC, 3, "images").is_ok();
            let labels = parse_bytes(data, origin, LABELS_MAGIC, 1, "labels").is_ok();
            images || labels
        }
        "csv" => ["0", "label"]
            .iter()
            .any(|l| dropnet::data::csv::parse(data, origin, dropnet::data::csv::Columns::Label(l)).is_ok()),
        "recipe" => {
            let text = std::str::from_utf8(data).unwrap_or("");
            let recipe = options::TrainOptions::from_toml(text, origin).is_ok();
            let keep = options::parse_keep_file(text, origin, 2).is_ok();
            recipe || keep
        }
        other => panic!("unknown target {other}"),
    }
}

const TARGETS: [&str; 4] = ["model_file", "idx", "csv", "recipe"];

#[test]
fn every_seed_parses() {
    for target in TARGETS {
        let seeds = inputs("seeds", target);
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for (path, data) in seeds {
            assert!(parse(target, &data), "{} does not parse", path.display());
        }
    }
}

#[test]
fn every_kept_hostile_input_is_refused() {
    let mut count = 0;
    for target in TARGETS {
        for (path, data) in inputs("regressions", target) {
            assert!(!parse(target, &data), "{} was accepted", path.display());
            count += 1;
        }
    }
    assert!(count >= 8, "only {count} inputs in fuzz/regressions: the folder was not found");
}
