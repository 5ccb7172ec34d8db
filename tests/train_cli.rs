//! `dropnet train`, `eval`, `predict` and `info` end to end, and every bad input the issue lists:
//! each gives a clear error naming the file or value, a non-zero exit, no panic and no model file.

mod common;
use common::*;
use dropnet::io;
use std::path::Path;

/// Flags of a small, fast run on the toy IDX data in `dir`.
const TOY: [&str; 10] = ["--data", "toy", "--arch", "16-12-3", "--keep", "0.9,0.7", "--lr", "0.1", "--batch", "16"];

fn toy_dir(name: &str) -> std::path::PathBuf {
    let dir = temp_dir(name);
    std::fs::create_dir(dir.join("toy")).unwrap();
    write_toy_idx(&dir.join("toy"), 300, 90, true);
    dir
}

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["train"];
    v.extend_from_slice(&TOY);
    v.extend_from_slice(extra);
    v
}

/// A command that must fail: non-zero exit, no panic, stderr containing every `expected` piece.
fn assert_fails(out: &std::process::Output, expected: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "succeeded; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for piece in expected {
        assert!(err.contains(piece), "missing '{piece}' in: {err}");
    }
}

#[test]
fn mnist_one_epoch_learns() {
    // Real MNIST (CI provides ../shared/data/mnist). A broken trainer sits near 0.9 error; one epoch
    // of a small dropout net reaches about 0.05.
    let dir = temp_dir("mnist_e2e");
    let data = mnist_dir();
    let out = dropnet(
        &dir,
        &["train", "--data", data.to_str().unwrap(), "--arch", "784-256-10", "--epochs", "1", "--lr", "0.05", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    let test_error = report["test_error"].as_f64().unwrap();
    assert!(test_error < 0.08, "test error {test_error}");
    assert_eq!(report["epochs"], 1);
    assert!(report["val_error"].is_null());
    assert!(report["samples_per_s"].as_f64().unwrap() > 0.0 && report["wall_s"].as_f64().unwrap() > 0.0);
    assert!(dir.join("model.safetensors").exists());
}

#[test]
fn toy_training_eval_predict_and_info() {
    let dir = toy_dir("toy_e2e");
    let out =
        dropnet(&dir, &args(&["--epochs", "8", "--val", "60", "--json", "--log", "log.jsonl", "--plot", "curves.svg"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    assert!(report["test_error"].as_f64().unwrap() < 0.1, "{report}");
    assert!(report["val_error"].as_f64().unwrap() < 0.1, "{report}");
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 8);
    assert!(std::fs::read_to_string(dir.join("curves.svg")).unwrap().starts_with("<svg"));

    let eval = dropnet(&dir, &["eval", "--model", "model.safetensors", "--data", "toy", "--mc", "20", "--json"]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let e = last_json(&eval);
    assert_eq!(e["n"], 90);
    assert!((e["error"].as_f64().unwrap() - report["test_error"].as_f64().unwrap()).abs() < 1e-12);
    assert!(e["mc_error"].as_f64().unwrap() < 0.2 && e["loss"].as_f64().unwrap() > 0.0);

    let pred = dropnet(&dir, &["predict", "--model", "model.safetensors", "--data", "toy", "--mc", "20", "--json"]);
    assert!(pred.status.success(), "{}", stderr(&pred));
    let text = String::from_utf8_lossy(&pred.stdout);
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 91);
    let first = &lines[0];
    let mean: Vec<f64> = first["mean"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!((mean.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    let entropy = first["entropy"].as_f64().unwrap();
    let mi = first["mutual_information"].as_f64().unwrap();
    assert!((0.0..=entropy + 1e-9).contains(&mi), "0 ≤ MI ≤ entropy: {mi} vs {entropy}");
    assert!(first["std"].as_array().unwrap().len() == 3);
    assert!(lines[90]["examples_per_s"].as_f64().unwrap() > 0.0);

    let info = dropnet(&dir, &["info", "--model", "model.safetensors", "--json"]);
    let i = last_json(&info);
    assert_eq!(i["epochs_done"], 8);
    assert_eq!(i["layers"][1]["keep"].as_array().unwrap().len(), 12);
}

#[test]
fn resume_continues_bit_for_bit() {
    let dir = toy_dir("toy_resume");
    let straight = dropnet(&dir, &args(&["--epochs", "4", "--out", "straight.safetensors", "--momentum", "0.5"]));
    assert!(straight.status.success(), "{}", stderr(&straight));
    let first = dropnet(&dir, &args(&["--epochs", "2", "--out", "resumed.safetensors", "--momentum", "0.5"]));
    assert!(first.status.success());
    let second = dropnet(
        &dir,
        &["train", "--data", "toy", "--resume", "resumed.safetensors", "--epochs", "4", "--out", "resumed.safetensors"],
    );
    assert!(second.status.success(), "{}", stderr(&second));
    let a = io::load(&dir.join("straight.safetensors")).unwrap();
    let b = io::load(&dir.join("resumed.safetensors")).unwrap();
    for (pa, pb) in a.net.params().iter().zip(b.net.params()) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(pa.value), bits(pb.value), "{} differs", pa.name);
    }
    assert_eq!(a.slots, b.slots);
    // and the history is the same run (times aside)
    let epochs = |s: &io::Saved| -> Vec<(f64, Option<f64>)> {
        let state: serde_json::Value = serde_json::from_str(s.training.as_ref().unwrap()).unwrap();
        state["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["train_loss"].as_f64().unwrap(), r["test_error"].as_f64()))
            .collect()
    };
    assert_eq!(epochs(&a), epochs(&b));
}

#[test]
fn checkpoints_are_written_during_training() {
    let dir = toy_dir("toy_checkpoint");
    let out = dropnet(&dir, &args(&["--epochs", "3", "--checkpoint-every", "1", "--out", "ck.safetensors"]));
    assert!(out.status.success());
    let saved = io::load(&dir.join("ck.safetensors")).unwrap();
    assert!(saved.training.unwrap().contains("\"epochs_done\":3"));
}

#[test]
fn max_norm_bounds_every_unit() {
    let dir = toy_dir("toy_maxnorm");
    let mut a = args(&["--epochs", "3", "--max-norm", "0.5"]);
    a[8] = "0.5"; // a large step, so that the constraint has work to do
    let out = dropnet(&dir, &a);
    assert!(out.status.success(), "{}", stderr(&out));
    let saved = io::load(&dir.join("model.safetensors")).unwrap();
    for layer in saved.net.layers() {
        for j in 0..layer.outputs() {
            let norm = layer.weight.row(j).iter().map(|w| w * w).sum::<f32>().sqrt();
            assert!(norm <= 0.5 * (1.0 + 1e-5), "unit {j} has norm {norm}");
        }
    }
}

#[test]
fn recipe_values_apply_and_flags_override_them() {
    let dir = toy_dir("toy_recipe");
    std::fs::write(dir.join("r.toml"), "epochs = 5\nlr = 0.1\nkeep = [0.9, 0.7]\narch = \"16-12-3\"\nbatch = 16\n")
        .unwrap();
    let out = dropnet(&dir, &["train", "--data", "toy", "--recipe", "r.toml", "--epochs", "2", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["epochs"], 2);
    let out = dropnet(&dir, &["train", "--data", "toy", "--recipe", "r.toml", "--json"]);
    assert_eq!(last_json(&out)["epochs"], 5);
}

#[test]
fn per_unit_keep_from_a_file() {
    let dir = toy_dir("toy_keepfile");
    let per_unit: Vec<f64> = (0..16).map(|k| 0.5 + k as f64 / 40.0).collect();
    std::fs::write(dir.join("keep.json"), serde_json::json!([per_unit, 0.6]).to_string()).unwrap();
    let out = dropnet(&dir, &args(&["--epochs", "1", "--keep-file", "keep.json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let saved = io::load(&dir.join("model.safetensors")).unwrap();
    let keep = saved.net.layers()[0].dropout.keep().values().to_vec();
    assert_eq!(keep, per_unit);
    assert_eq!(saved.net.layers()[1].dropout.keep().values(), &[0.6; 12]);
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_model() {
    let dir = toy_dir("toy_diverge");
    // lr 0.1 in epoch 1, then ×1e30: the loss overflows in epoch 2
    let out = dropnet(&dir, &args(&["--epochs", "4", "--lr-schedule", "exp:1e30", "--checkpoint-every", "1"]));
    assert_fails(&out, &["diverged at epoch 2", "last good weights"]);
    let saved = io::load(&dir.join("model.safetensors")).unwrap();
    assert!(saved.training.unwrap().contains("\"epochs_done\":1"));
}

fn no_model(dir: &Path) {
    assert!(!dir.join("model.safetensors").exists(), "a model file was written");
}

#[test]
fn bad_data_files_are_named() {
    let dir = toy_dir("bad_data");
    // missing folder
    let out = dropnet(&dir, &["train", "--data", "nowhere", "--epochs", "1"]);
    assert_fails(&out, &["nowhere", "no such file"]);
    // wrong magic
    let labels = std::fs::read(dir.join("toy/train-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(dir.join("toy/train-images-idx3-ubyte.gz"), labels).unwrap();
    assert_fails(&dropnet(&dir, &args(&["--epochs", "1"])), &["train-images-idx3-ubyte.gz", "magic"]);
    no_model(&dir);
}

#[test]
fn truncated_and_mismatched_idx_files_are_named() {
    let dir = toy_dir("bad_idx");
    let path = dir.join("toy/t10k-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
    assert_fails(&dropnet(&dir, &args(&["--epochs", "1"])), &["t10k-images-idx3-ubyte.gz"]);
    no_model(&dir);

    let dir = toy_dir("bad_counts");
    let labels = dropnet::data::idx::encode(dropnet::data::idx::LABELS_MAGIC, &[299], &[0; 299]);
    std::fs::write(dir.join("toy/train-labels-idx1-ubyte.gz"), gzip(&labels)).unwrap();
    assert_fails(&dropnet(&dir, &args(&["--epochs", "1"])), &["299 labels", "300 images"]);
    no_model(&dir);
}

#[test]
fn labels_beyond_the_output_width_are_an_error() {
    let dir = toy_dir("bad_width");
    let mut a = args(&["--epochs", "1"]);
    a[4] = "16-12-2"; // three classes in the data, two outputs
    assert_fails(&dropnet(&dir, &a), &["labels go up to 2", "2 outputs"]);
    no_model(&dir);
}

#[test]
fn bad_csv_files_are_named() {
    let dir = temp_dir("bad_csv");
    for (name, text, expected) in [
        ("ragged.csv", "0,1,2\n1,2\n", "line 2: 2 fields, expected 3"),
        ("word.csv", "0,1,2\n1,x,2\n", "'x' is not a number"),
        ("nan.csv", "0,1,2\n1,nan,2\n", "not a finite number"),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
        let out = dropnet(&dir, &["train", "--data", name, "--arch", "2-3", "--epochs", "1"]);
        assert_fails(&out, &[name, expected]);
        no_model(&dir);
    }
}

#[test]
fn keep_outside_the_unit_interval_is_an_error_naming_it() {
    let dir = toy_dir("bad_keep");
    let mut a = args(&["--epochs", "1"]);
    a[6] = "0.9,1.5";
    assert_fails(&dropnet(&dir, &a), &["keep probability 1.5", "layer 1"]);
    a[6] = "0,0.5";
    assert_fails(&dropnet(&dir, &a), &["keep probability 0 ", "layer 0"]);
    no_model(&dir);
}

#[test]
fn a_recipe_with_an_unknown_key_is_an_error() {
    let dir = toy_dir("bad_recipe");
    std::fs::write(dir.join("r.toml"), "epochs = 2\nlearning_rate = 0.1\n").unwrap();
    let out = dropnet(&dir, &["train", "--data", "toy", "--recipe", "r.toml"]);
    assert_fails(&out, &["r.toml", "learning_rate"]);
    no_model(&dir);
}

#[test]
fn a_model_file_whose_metadata_does_not_match_its_tensors_is_rejected() {
    let dir = toy_dir("bad_model");
    assert!(dropnet(&dir, &args(&["--epochs", "1"])).status.success());
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    // give the first weight a shape the metadata's architecture does not have (same byte length)
    let (from, to) = (b"\"shape\":[12,16]", b"\"shape\":[16,12]");
    let at = bytes.windows(from.len()).position(|w| w == from).expect("sizes in the metadata");
    let mut edited = bytes.clone();
    edited[at..at + from.len()].copy_from_slice(to);
    let broken = dir.join("broken.safetensors");
    std::fs::write(&broken, &edited).unwrap();
    let out = dropnet(&dir, &["eval", "--model", "broken.safetensors", "--data", "toy"]);
    assert_fails(&out, &["broken.safetensors", "layers.0.weight", "[16, 12]", "needs [12, 16]"]);
    // a truncated file
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let out = dropnet(&dir, &["eval", "--model", "broken.safetensors", "--data", "toy"]);
    assert_fails(&out, &["broken.safetensors"]);
    // a missing one
    assert_fails(&dropnet(&dir, &["info", "--model", "missing.safetensors"]), &["missing.safetensors"]);
}

#[test]
fn every_shipped_recipe_parses_and_describes_a_valid_run() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let options = dropnet::recipe::TrainOptions::from_recipe(&path).unwrap();
        let sizes = options.sizes().unwrap();
        assert_eq!((sizes[0], sizes[sizes.len() - 1]), (784, 10), "{}", path.display());
        assert_eq!(options.keep.as_ref().unwrap().len(), sizes.len() - 1, "{}", path.display());
        options.optim_config().unwrap();
        count += 1;
    }
    assert!(count >= 3);
}

#[test]
fn early_stopping_ends_a_run_that_stops_improving() {
    let dir = toy_dir("toy_early");
    let mut a = args(&["--epochs", "50", "--val", "60", "--patience", "2", "--json"]);
    a[8] = "1e-12"; // learning too slowly to change the validation error
    let out = dropnet(&dir, &a);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    assert_eq!(report["stopped"], "early");
    // epoch 1 sets the best; epochs 2 and 3 do not beat it; patience 2 stops after epoch 3
    assert_eq!(report["epochs"], 3);
}
