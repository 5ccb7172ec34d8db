//! Model files that are damaged, forged or hostile: each gives an error naming the file and what
//! is wrong, with no panic and no crash, in every command that reads models.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// A folder with toy data and a model trained on it for two epochs (with optimizer state).
fn trained(name: &str) -> (PathBuf, Vec<u8>) {
    let dir = toy_dir(name);
    let out = dropnet(&dir, &toy_args(&["--epochs", "2", "--standardize"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    (dir, bytes)
}

/// Every command that reads a model, on `file` in `dir`: each fails naming the file and `expected`.
fn every_reader_refuses(dir: &Path, file: &str, expected: &[&str]) {
    let runs: [Vec<&str>; 4] = [
        vec!["info", "--model", file],
        vec!["eval", "--model", file, "--data", "toy"],
        vec!["predict", "--model", file, "--data", "toy", "--mc", "3"],
        vec!["train", "--resume", file, "--epochs", "9"],
    ];
    let before = std::fs::read(dir.join(file)).unwrap();
    for args in runs {
        let out = dropnet(dir, &args);
        let mut pieces = vec![file];
        pieces.extend_from_slice(expected);
        assert_fails(&out, &pieces);
    }
    assert_eq!(std::fs::read(dir.join(file)).unwrap(), before, "a reader changed the file");
}

#[test]
fn a_tensor_shape_whose_size_overflows_is_refused() {
    // The 416-byte file of the issue: shape [1, 2^62] made every reader crash.
    let (dir, bytes) = trained("model_overflow");
    let forged = edited(&bytes, |h| h["1.weight"]["shape"] = serde_json::json!([1u64, 1u64 << 62]));
    std::fs::write(dir.join("big.safetensors"), forged).unwrap();
    every_reader_refuses(&dir, "big.safetensors", &["shape"]);
}

#[test]
fn an_architecture_too_large_for_the_file_is_refused_before_allocating_it() {
    // A 4 KB file whose metadata declares an output layer of 2^24 units (a 2^24 x 12 weight
    // matrix, within the limits): refused from the tensor table, not after allocating and
    // initialising 800 MB of weights. The toy stack: keep, dense12, relu, keep, dense3.
    let (dir, bytes) = trained("model_huge_arch");
    let forged = edited(&bytes, |h| {
        let mut arch = meta(h, "architecture");
        arch["layers"][4]["units"] = serde_json::json!(16_777_216);
        set_meta(h, "architecture", &arch);
    });
    std::fs::write(dir.join("huge.safetensors"), forged).unwrap();
    every_reader_refuses(&dir, "huge.safetensors", &["4.weight has shape [3, 12]", "needs [16777216, 12]"]);
}

#[test]
fn a_wrong_format_value_is_refused() {
    let (dir, bytes) = trained("model_format");
    let forged = edited(&bytes, |h| h["__metadata__"]["format"] = "dropnet-model-9".into());
    std::fs::write(dir.join("f.safetensors"), forged).unwrap();
    every_reader_refuses(&dir, "f.safetensors", &["format is 'dropnet-model-9'"]);
}

#[test]
fn overlapping_tensor_offsets_are_refused() {
    let (dir, bytes) = trained("model_overlap");
    let forged = edited(&bytes, |h| {
        let first = h["layers.0.bias"]["data_offsets"].clone();
        h["layers.0.weight"]["data_offsets"] = first;
    });
    std::fs::write(dir.join("o.safetensors"), forged).unwrap();
    every_reader_refuses(&dir, "o.safetensors", &[]);
}

#[test]
fn a_key_that_appears_twice_is_refused_by_name() {
    let (dir, bytes) = trained("model_duplicate");
    let text = header(&bytes).to_string();
    // repeat the bias entry (same value) and a metadata key: the crate's map would merge them
    let bias = format!("\"1.bias\":{}", header(&bytes)["1.bias"]);
    let doubled = text.replacen(&bias, &format!("{bias},{bias}"), 1);
    std::fs::write(dir.join("d.safetensors"), with_header(&bytes, &doubled)).unwrap();
    every_reader_refuses(&dir, "d.safetensors", &["'1.bias' appears twice"]);
    let seed = format!("\"seed\":{}", header(&bytes)["__metadata__"]["seed"]);
    let doubled = text.replacen(&seed, &format!("{seed},{seed}"), 1);
    std::fs::write(dir.join("m.safetensors"), with_header(&bytes, &doubled)).unwrap();
    every_reader_refuses(&dir, "m.safetensors", &["'seed' appears twice"]);
}

#[test]
fn a_zero_width_layer_is_refused() {
    let (dir, bytes) = trained("model_zero_width");
    let forged = edited(&bytes, |h| {
        let mut arch = meta(h, "architecture");
        arch["layers"][1]["units"] = serde_json::json!(0);
        set_meta(h, "architecture", &arch);
    });
    std::fs::write(dir.join("z.safetensors"), forged).unwrap();
    every_reader_refuses(&dir, "z.safetensors", &["output of 0 is outside"]);
}

#[test]
fn a_standardisation_with_a_zero_deviation_is_refused() {
    let (dir, bytes) = trained("model_std");
    let forged = edited(&bytes, |h| {
        let mut s = meta(h, "standardization");
        s["std"][3] = serde_json::json!(0.0);
        set_meta(h, "standardization", &s);
    });
    std::fs::write(dir.join("s.safetensors"), forged).unwrap();
    every_reader_refuses(&dir, "s.safetensors", &["deviation of feature 3 is 0"]);
}

#[test]
fn a_partial_optimizer_state_is_refused_not_dropped() {
    let (dir, bytes) = trained("model_partial_state");
    // Remove one slot tensor from the table; its bytes stay, so the offsets must be redone: the
    // simplest honest forgery is to drop the last tensor and its bytes.
    let mut h = header(&bytes);
    let entries = h.as_object().unwrap().clone();
    let (last, info) = entries
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .max_by_key(|(_, v)| v["data_offsets"][1].as_u64().unwrap())
        .unwrap();
    assert!(last.starts_with("optimizer."), "{last}");
    let cut = info["data_offsets"][0].as_u64().unwrap() as usize;
    h.as_object_mut().unwrap().remove(last);
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let forged = with_header(&bytes[..8 + n + cut], &h.to_string());
    std::fs::write(dir.join("p.safetensors"), forged).unwrap();
    every_reader_refuses(&dir, "p.safetensors", &["is missing"]);
}

#[test]
fn truncated_and_damaged_files_are_refused() {
    let (dir, bytes) = trained("model_damaged");
    for (name, forged) in [
        ("short.safetensors", bytes[..5].to_vec()),
        ("half.safetensors", bytes[..bytes.len() / 2].to_vec()),
        ("long.safetensors", [bytes.clone(), vec![0; 8]].concat()),
        ("header.safetensors", [&(u64::MAX).to_le_bytes()[..], &bytes[8..]].concat()),
        ("nan.safetensors", {
            let mut b = bytes.clone();
            let at = b.len() - 4; // the last value of the last tensor
            b[at..].copy_from_slice(&f32::NAN.to_le_bytes());
            b
        }),
    ] {
        std::fs::write(dir.join(name), forged).unwrap();
        every_reader_refuses(&dir, name, &[]);
    }
}

#[test]
fn a_model_file_whose_metadata_does_not_match_its_tensors_is_rejected() {
    let (dir, bytes) = trained("model_mismatch");
    let forged = edited(&bytes, |h| h["1.weight"]["shape"] = serde_json::json!([16, 12]));
    std::fs::write(dir.join("broken.safetensors"), forged).unwrap();
    every_reader_refuses(&dir, "broken.safetensors", &["1.weight", "[16, 12]", "needs [12, 16]"]);
    assert_fails(&dropnet(&dir, &["info", "--model", "missing.safetensors"]), &["cannot read missing.safetensors"]);
}

#[test]
fn what_dropnet_writes_it_reads_and_the_same_model_gives_the_same_bytes() {
    let (dir, bytes) = trained("model_roundtrip");
    let saved = dropnet::model_file::parse(&bytes, Path::new("m")).unwrap();
    let extras = dropnet::model_file::Extras {
        loss: saved.loss,
        training: saved.training.as_ref(),
        standardization: saved.standardization.as_ref(),
        slots: &saved.slots,
        regression: saved.regression.as_ref(),
    };
    // the crate keeps metadata in a hash map: without our sorting, two encodings would differ
    let again = dropnet::model_file::encode(&saved.net, &extras).unwrap();
    assert_eq!(again, bytes, "re-encoding a model changed its bytes");
    assert_eq!(dropnet::model_file::encode(&saved.net, &extras).unwrap(), again);
    assert!(dir.join("model.safetensors").exists());
}

#[test]
fn a_version_1_file_loads_and_predicts_as_the_build_that_wrote_it() {
    // tests/fixtures/v1-toy.safetensors: the toy MLP (16-12-3, keep 0.9/0.7, standardised), one
    // epoch, written by the build before the layer stack (dc51e8a), with that build's
    // `predict --mc 5 --json` on the toy test set beside it. Monte-Carlo masks included: the stack
    // of a version-1 file puts a noise before every dense layer, as that format addressed them.
    let dir = toy_dir("model_v1");
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::copy(fixtures.join("v1-toy.safetensors"), dir.join("v1.safetensors")).unwrap();
    let out = dropnet(&dir, &["predict", "--model", "v1.safetensors", "--data", "toy", "--mc", "5", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let expected: Vec<serde_json::Value> = std::fs::read_to_string(fixtures.join("v1-toy-predict-mc5.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(expected.len(), 90);
    // The same masks and weights give the same predictions; the products' summation order is that
    // of the kernels that run (AVX-512 wrote the fixture, CI also runs the portable ones), so
    // numbers agree to f32 rounding: a few ulps of values ≤ 1 after tens of operations, far below
    // 1e-5, while one mask bit differently drawn moves a probability by more than 1e-3.
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(
            g.as_object().unwrap().keys().collect::<Vec<_>>(),
            e.as_object().unwrap().keys().collect::<Vec<_>>()
        );
        for key in ["index", "label", "class"] {
            assert_eq!(g[key], e[key], "prediction {}: {key}", e["index"]);
        }
        let numbers = |v: &serde_json::Value| -> Vec<f64> {
            ["mean", "std"]
                .iter()
                .flat_map(|k| v[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                .chain(["entropy", "mutual_information"].iter().map(|k| v[k].as_f64().unwrap()))
                .collect()
        };
        for (a, b) in numbers(g).iter().zip(numbers(e)) {
            assert!((a - b).abs() < 1e-5, "prediction {}: {a} vs {b}", e["index"]);
        }
    }
    let info = last_json(&dropnet(&dir, &["info", "--model", "v1.safetensors", "--json"]));
    assert_eq!(info["arch"], "16,keep0.9,dense12,relu,keep0.7,dense3");
    // and written again, it is a version-2 file with the names of nn.Sequential
    let saved = dropnet::model_file::load(&dir.join("v1.safetensors")).unwrap();
    let names: Vec<String> = saved.net.params().iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, ["1.weight", "1.bias", "4.weight", "4.bias"]);
}

#[test]
fn forged_concrete_dropout_settings_are_refused_and_missing_ones_are_the_defaults() {
    let dir = toy_dir("model_concrete");
    let arch = "16,concrete0.8,dense12,relu,dense3";
    let args = ["train", "--data", "toy", "--arch", arch, "--epochs", "2", "--lr", "0.1", "--batch", "16"];
    let out = dropnet(&dir, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let forge = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let forged = edited(&bytes, |h| {
            let mut arch = meta(h, "architecture");
            edit(&mut arch["layers"]);
            set_meta(h, "architecture", &arch);
        });
        std::fs::write(dir.join(name), forged).unwrap();
    };
    forge("t.safetensors", &|l| l[0]["concrete"]["temperature"] = serde_json::json!(-1.0));
    every_reader_refuses(&dir, "t.safetensors", &["temperature -1 must be positive"]);
    forge("b.safetensors", &|l| l[0]["noise"] = serde_json::json!("bernoulli"));
    every_reader_refuses(&dir, "b.safetensors", &["concrete settings on bernoulli noise would have no effect"]);
    // without its settings a concrete token has the default ones, and its logits still load
    forge("d.safetensors", &|l| {
        l[0].as_object_mut().unwrap().remove("concrete");
    });
    let info = dropnet(&dir, &["info", "--model", "d.safetensors", "--json"]);
    assert!(info.status.success(), "{}", stderr(&info));
    assert_eq!(last_json(&info)["learned_keep"][0]["keep"].as_array().unwrap().len(), 16);
}
