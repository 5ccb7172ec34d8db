//! Reading data: IDX (gzip or raw) and CSV, and the errors bad files give.

mod common;
use common::*;
fn lo(val: usize, seed: u64, standardize: bool) -> dropnet::data::LoadOptions {
    dropnet::data::LoadOptions { val, seed, standardize, standardize_targets: false }
}

use dropnet::data::idx::{encode, IMAGES_MAGIC, LABELS_MAGIC};
use dropnet::data::{self, Source};

#[test]
fn idx_reads_the_same_whether_gzipped_or_raw() {
    let (gz, raw) = (temp_dir("idx_gz"), temp_dir("idx_raw"));
    write_toy_idx(&gz, 30, 9, true);
    write_toy_idx(&raw, 30, 9, false);
    let a = data::load(&Source::Idx(gz), lo(0, 1, false)).unwrap();
    let b = data::load(&Source::Idx(raw), lo(0, 1, false)).unwrap();
    assert_eq!(a.train.x.as_slice(), b.train.x.as_slice());
    assert_eq!(a.train.labels().unwrap(), b.train.labels().unwrap());
    assert_eq!(a.test.as_ref().unwrap().len(), 9);
    // pixels are scaled to [0, 1]: the toy's first pixel of example 0 (class 1, row 0 dark) is 34/255
    let (pixels, labels) = toy_images(30, 1);
    assert_eq!(a.train.x.get(0, 0), pixels[0] as f32 / 255.0);
    assert_eq!(a.train.labels().unwrap()[0], labels[0] as usize);
}

#[test]
fn validation_split_is_seeded_and_disjoint() {
    let dir = temp_dir("idx_split");
    write_toy_idx(&dir, 40, 5, true);
    let a = data::load(&Source::Idx(dir.clone()), lo(10, 7, false)).unwrap();
    let b = data::load(&Source::Idx(dir.clone()), lo(10, 7, false)).unwrap();
    let c = data::load(&Source::Idx(dir), lo(10, 8, false)).unwrap();
    assert_eq!((a.train.len(), a.val.as_ref().unwrap().len()), (30, 10));
    assert_eq!(a.val.as_ref().unwrap().x.as_slice(), b.val.as_ref().unwrap().x.as_slice());
    assert_ne!(a.val.as_ref().unwrap().x.as_slice(), c.val.as_ref().unwrap().x.as_slice());
}

#[test]
fn shuffles_are_permutations_that_change_with_the_epoch() {
    let e0 = data::epoch_order(1000, 3, 0);
    let e1 = data::epoch_order(1000, 3, 1);
    let mut sorted = e0.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_ne!(e0, e1);
    assert_eq!(e0, data::epoch_order(1000, 3, 0));
}

fn load_err(dir: &std::path::Path) -> String {
    data::load(&Source::Idx(dir.to_path_buf()), lo(0, 1, false)).unwrap_err().to_string()
}

#[test]
fn wrong_magic_is_named() {
    let dir = temp_dir("idx_magic");
    write_toy_idx(&dir, 10, 3, false);
    let labels = encode(LABELS_MAGIC, &[10], &[0; 10]);
    std::fs::write(dir.join("train-images-idx3-ubyte"), labels).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("train-images-idx3-ubyte") && err.contains("magic is 0x00000801"), "{err}");
}

#[test]
fn truncated_payload_is_named() {
    let dir = temp_dir("idx_truncated");
    write_toy_idx(&dir, 10, 3, false);
    let (pixels, _) = toy_images(10, 1);
    std::fs::write(dir.join("train-images-idx3-ubyte"), encode(IMAGES_MAGIC, &[10, 4, 4], &pixels[..100])).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("truncated") && err.contains("160 bytes") && err.contains("has 100"), "{err}");
}

#[test]
fn truncated_gzip_is_named() {
    let dir = temp_dir("idx_truncated_gz");
    write_toy_idx(&dir, 10, 3, true);
    let path = dir.join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("train-images-idx3-ubyte.gz") && err.contains("gzip"), "{err}");
}

#[test]
fn image_and_label_counts_must_agree() {
    let dir = temp_dir("idx_counts");
    write_toy_idx(&dir, 10, 3, false);
    std::fs::write(dir.join("train-labels-idx1-ubyte"), encode(LABELS_MAGIC, &[9], &[0; 9])).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("9 labels") && err.contains("10 images"), "{err}");
}

#[test]
fn a_folder_without_data_says_what_is_missing() {
    let dir = temp_dir("idx_empty");
    assert!(load_err(&dir).contains("no train-images-idx3-ubyte"));
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn csv_with_and_without_header() {
    let dir = temp_dir("csv_ok");
    let plain = write(&dir, "plain.csv", "1,0.5,2\n0,1.5,-3\n");
    let named = write(&dir, "named.csv", "x,label,y\n0.5,1,2\n1.5,0,-3\n");
    let a = data::load(&Source::from_path(&plain, None, None, None).unwrap(), lo(0, 1, false)).unwrap();
    let b = data::load(&Source::from_path(&named, None, Some("label"), None).unwrap(), lo(0, 1, false)).unwrap();
    assert_eq!(a.train.labels().unwrap(), vec![1, 0]);
    assert_eq!(a.train.x.as_slice(), &[0.5, 2.0, 1.5, -3.0]);
    assert_eq!(b.train.labels().unwrap(), a.train.labels().unwrap());
    assert_eq!(b.train.x.as_slice(), a.train.x.as_slice());
}

#[test]
fn standardisation_gives_zero_mean_unit_variance_on_the_training_set() {
    let dir = temp_dir("csv_std");
    let path = write(&dir, "d.csv", "0,1,10\n1,3,10\n0,5,10\n");
    let s = data::load(&Source::from_path(&path, None, None, None).unwrap(), lo(0, 1, true)).unwrap();
    let col: Vec<f32> = (0..3).map(|i| s.train.x.get(i, 0)).collect();
    // (1, 3, 5): mean 3, population sd sqrt(8/3)
    let sd = (8.0f32 / 3.0).sqrt();
    assert!(col.iter().zip([-2.0 / sd, 0.0, 2.0 / sd]).all(|(a, b)| (a - b).abs() < 1e-6), "{col:?}");
    // a constant feature becomes 0, not NaN
    assert!((0..3).all(|i| s.train.x.get(i, 1) == 0.0));
}

#[test]
fn csv_errors_name_the_line_and_value() {
    let dir = temp_dir("csv_bad");
    let cases = [
        ("ragged.csv", "1,2,3\n0,1\n", "line 2: 2 fields, expected 3"),
        ("word.csv", "1,2,3\n0,abc,1\n", "line 2, column 1: 'abc' is not a number"),
        ("nan.csv", "1,2,3\n0,NaN,1\n", "line 2, column 1: NaN is not a finite number"),
        ("label.csv", "1.5,2,3\n", "label 1.5 is not a class index"),
    ];
    for (name, text, expected) in cases {
        let path = write(&dir, name, text);
        let err =
            data::load(&Source::from_path(&path, None, None, None).unwrap(), lo(0, 1, false)).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(expected), "{name}: {err}");
    }
}

#[test]
fn discovery_names_where_it_looked_and_how_to_get_data() {
    let dir = temp_dir("discover");
    let candidates = [dir.join("nothing-here"), dir.join("nor-here")];
    let err = data::discover_in(None, &candidates).unwrap_err().to_string();
    for c in &candidates {
        assert!(err.contains(&c.display().to_string()), "{err}");
    }
    assert!(err.contains("apt-get install dataset-fashion-mnist"), "{err}");
    // a folder that holds a training set is found
    std::fs::create_dir_all(&candidates[1]).unwrap();
    write_toy_idx(&candidates[1], 5, 0, true);
    assert_eq!(data::discover_in(None, &candidates).unwrap(), candidates[1]);
    // the default list is the documented one
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");
    assert_eq!(
        data::SEARCH_PATH,
        ["./data/mnist", shipped, "./data/fashion-mnist", "/usr/share/datasets/fashion-mnist"]
    );
}
