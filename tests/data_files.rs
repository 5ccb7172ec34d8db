//! Data files that are damaged, hostile or unusual, through `dropnet train` as a user runs it:
//! valid variants are read, everything else is a clean error naming the file, in bounded time and
//! memory, and no model file is written.

mod common;
use common::*;
use dropnet::data::idx::{encode, IMAGES_MAGIC, LABELS_MAGIC};
use std::path::Path;

fn no_model(dir: &Path) {
    assert!(!dir.join("model.safetensors").exists(), "a model file was written");
}

/// `train` on a CSV file of two features and labels 0/1.
fn train_csv<'a>(file: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["train", "--data", file, "--arch", "2-3", "--epochs", "1", "--batch", "2"];
    v.extend_from_slice(extra);
    v
}

#[test]
fn missing_and_wrong_magic_idx_files_are_named() {
    let dir = toy_dir("bad_data");
    assert_fails(&dropnet(&dir, &["train", "--data", "nowhere", "--epochs", "1"]), &["nowhere", "no such file"]);
    let labels = std::fs::read(dir.join("toy/train-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(dir.join("toy/train-images-idx3-ubyte.gz"), labels).unwrap();
    assert_fails(&dropnet(&dir, &toy_args(&["--epochs", "1"])), &["train-images-idx3-ubyte.gz", "magic"]);
    no_model(&dir);
}

#[test]
fn truncated_and_mismatched_idx_files_are_named() {
    let dir = toy_dir("bad_idx");
    let path = dir.join("toy/t10k-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
    assert_fails(&dropnet(&dir, &toy_args(&["--epochs", "1"])), &["t10k-images-idx3-ubyte.gz", "truncated"]);
    no_model(&dir);

    let dir = toy_dir("bad_counts");
    let labels = encode(LABELS_MAGIC, &[299], &[0; 299]);
    std::fs::write(dir.join("toy/train-labels-idx1-ubyte.gz"), gzip(&labels)).unwrap();
    assert_fails(&dropnet(&dir, &toy_args(&["--epochs", "1"])), &["299 labels", "300 images"]);
    no_model(&dir);
}

#[test]
fn idx_dimensions_whose_product_overflows_are_refused() {
    let dir = toy_dir("idx_overflow");
    let images = encode(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[0; 64]);
    std::fs::write(dir.join("toy/train-images-idx3-ubyte.gz"), gzip(&images)).unwrap();
    let out = dropnet(&dir, &toy_args(&["--epochs", "1"]));
    assert_fails(&out, &["train-images-idx3-ubyte.gz", "4294967295 x 4294967295 x 4294967295", "more than"]);
    no_model(&dir);
}

#[test]
fn a_gzip_stream_that_expands_past_its_header_is_refused_at_once() {
    // 10 images of 4x4 declared, 64 MB of zeros in 64 KB of gzip: refused at the first extra
    // byte, not after decompressing everything.
    let dir = toy_dir("idx_bomb");
    let mut images = encode(IMAGES_MAGIC, &[10, 4, 4], &[]);
    images.resize(16 + (64 << 20), 0);
    std::fs::write(dir.join("toy/train-images-idx3-ubyte.gz"), gzip(&images)).unwrap();
    let out = dropnet_within(&dir, &toy_args(&["--epochs", "1"]), 20);
    assert_fails(&out, &["train-images-idx3-ubyte.gz", "goes on past the 160 images bytes"]);
    no_model(&dir);
}

#[test]
fn concatenated_gzip_members_are_one_stream() {
    // `cat a.gz b.gz`, pigz and bgzip write several members; gunzip reads them as one file.
    let dir = toy_dir("idx_members");
    let (pixels, labels) = toy_images(300, 1);
    let images = encode(IMAGES_MAGIC, &[300, 4, 4], &pixels);
    let (head, tail) = images.split_at(1000);
    std::fs::write(dir.join("toy/train-images-idx3-ubyte.gz"), [gzip(head), gzip(tail)].concat()).unwrap();
    let labels = encode(LABELS_MAGIC, &[300], &labels);
    let parts = [gzip(&labels[..5]), gzip(&labels[5..100]), gzip(&labels[100..])].concat();
    std::fs::write(dir.join("toy/train-labels-idx1-ubyte.gz"), parts).unwrap();
    let out = dropnet(&dir, &toy_args(&["--epochs", "4", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(last_json(&out)["test_error"].as_f64().unwrap() < 0.1);
}

#[test]
fn bad_csv_files_are_named() {
    let dir = temp_dir("bad_csv");
    for (name, text, expected) in [
        ("ragged.csv", "0,1,2\n1,2\n", "line 2: 2 fields, expected 3"),
        ("word.csv", "0,1,2\n1,x,2\n", "line 2, column 1: 'x' is not a number"),
        ("nan.csv", "0,1,2\n1,nan,2\n", "not a finite number"),
        ("label.csv", "1.5,2,3\n", "label 1.5 is not a class index"),
        ("empty.csv", "", "no examples"),
        ("header-only.csv", "y,a,b\n", "no examples"),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
        assert_fails(&dropnet(&dir, &train_csv(name, &[])), &[name, expected]);
        no_model(&dir);
    }
}

/// `rows` with every field in double quotes and spaces inside them.
fn quoted(rows: &str) -> String {
    rows.lines().map(|l| l.split(',').map(|f| format!("\" {f} \"")).collect::<Vec<_>>().join(",") + "\n").collect()
}

#[test]
fn csv_with_bom_quotes_and_any_line_end_trains() {
    let dir = temp_dir("csv_variants");
    let rows: String = (0..40).map(|i| format!("{},{}.5,{}\n", i % 2, (i % 2) * 4, i % 7)).collect();
    for (name, text) in [
        ("bom.csv", format!("\u{feff}label,x,y\n{rows}")),
        ("cr.csv", format!("label,x,y\n{rows}").replace('\n', "\r")),
        ("crlf.csv", format!("label,x,y\n{rows}").replace('\n', "\r\n")),
        ("quoted.csv", format!("\"label\",\"x\",\"y\"\n{}", quoted(&rows))),
    ] {
        std::fs::write(dir.join(name), &text).unwrap();
        let out = dropnet(&dir, &train_csv(name, &["--label-col", "label", "--json", "--out", "m.safetensors"]));
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let saved = dropnet::model_file::load(&dir.join("m.safetensors")).unwrap();
        assert_eq!(saved.net.inputs(), 2, "{name}: the header's first name was hidden or a row was lost");
        assert!(stderr(&out).contains("40 training"), "{name}: {}", stderr(&out));
    }
}

#[test]
fn a_csv_line_longer_than_the_limit_is_refused_without_reading_it_all() {
    let dir = temp_dir("csv_long_line");
    let mut text = b"0,1,2\n1,".to_vec();
    text.resize(text.len() + 2 * dropnet::limits::MAX_CSV_LINE_BYTES, b'7');
    std::fs::write(dir.join("long.csv"), &text).unwrap();
    assert_fails(&dropnet(&dir, &train_csv("long.csv", &[])), &["long.csv", "line 2 is longer than 1048576 bytes"]);
    no_model(&dir);
}

#[test]
fn empty_training_and_test_sets_are_errors_naming_their_files() {
    let dir = toy_dir("empty_sets");
    std::fs::write(dir.join("toy/t10k-images-idx3-ubyte.gz"), gzip(&encode(IMAGES_MAGIC, &[0, 4, 4], &[]))).unwrap();
    std::fs::write(dir.join("toy/t10k-labels-idx1-ubyte.gz"), gzip(&encode(LABELS_MAGIC, &[0], &[]))).unwrap();
    assert_fails(&dropnet(&dir, &toy_args(&["--epochs", "1"])), &["t10k-images", "the test set has no examples"]);
    assert_fails(&dropnet(&dir, &["eval", "--model", "x", "--data", "toy"]), &["x"]);
    std::fs::write(dir.join("toy/train-images-idx3-ubyte.gz"), gzip(&encode(IMAGES_MAGIC, &[0, 4, 4], &[]))).unwrap();
    std::fs::write(dir.join("toy/train-labels-idx1-ubyte.gz"), gzip(&encode(LABELS_MAGIC, &[0], &[]))).unwrap();
    let out = dropnet(&dir, &toy_args(&["--epochs", "1"]));
    assert_fails(&out, &["the training set has no examples"]);
    assert!(!stderr(&out).contains("--val"), "blames a flag the user did not give: {}", stderr(&out));
    no_model(&dir);
}

#[cfg(unix)]
#[test]
fn devices_and_fifos_are_refused_by_name_without_hanging() {
    let dir = toy_dir("devices");
    let fifo = dir.join("fifo.csv");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for (args, expected) in [
        (train_csv("/dev/zero", &[]), "is a device"),
        (train_csv("fifo.csv", &[]), "is a FIFO"),
        (vec!["info", "--model", "/dev/zero"], "is a device"),
        (vec!["info", "--model", "fifo.csv"], "is a FIFO"),
        (vec!["eval", "--model", "/dev/zero", "--data", "toy"], "is a device"),
        (toy_args(&["--recipe", "/dev/zero"]), "is a device"),
        (toy_args(&["--recipe", "fifo.csv"]), "is a FIFO"),
        (
            {
                let mut a = toy_args(&["--keep-file", "/dev/zero"]);
                a.drain(5..7);
                a
            },
            "is a device",
        ),
    ] {
        let out = dropnet_within(&dir, &args, 20);
        assert_fails(&out, &[expected]);
    }
    no_model(&dir);
}

#[test]
fn control_characters_from_files_are_escaped_in_messages() {
    let dir = temp_dir("escapes");
    std::fs::write(dir.join("evil.csv"), "0,1,2\n1,\u{1b}[2J\u{1b}]0;owned\u{7},2\n").unwrap();
    let out = dropnet(&dir, &train_csv("evil.csv", &[]));
    assert_fails(&out, &["evil.csv", "\\u{1b}[2J"]);
    assert!(!out.stderr.contains(&0x1b) && !out.stderr.contains(&0x07), "raw control bytes reached the terminal");
}

#[test]
fn io_errors_say_what_could_not_be_read() {
    let dir = toy_dir("io_errors");
    std::fs::write(dir.join("plain.txt"), "x").unwrap();
    let out = dropnet(&dir, &["info", "--model", "plain.txt/model.safetensors"]);
    assert_fails(&out, &["cannot read plain.txt/model.safetensors: Not a directory"]);
    assert!(!stderr(&out).contains("invalid configuration"), "{}", stderr(&out));
}
