//! A convolutional stack end to end through the command line: train, info, eval, predict (with
//! Monte-Carlo dropout) and the model file's PyTorch names, on the toy 4x4 images of `common`.

mod common;
use common::*;

/// conv (module 0) → relu 1 → maxpool 2 → flatten 3 → keep 4 → dense 5: 1x4x4 → 4x4x4 → 4x2x2 → 3
const ARCH: &str = "1x4x4,conv4k3p1,relu,maxpool2,flatten,keep0.8,dense3";

fn train_cnn(name: &str, extra: &[&str]) -> std::path::PathBuf {
    let dir = toy_dir(name);
    let mut args = vec!["train", "--data", "toy", "--arch", ARCH, "--lr", "0.1", "--batch", "16"];
    args.extend_from_slice(extra);
    let out = dropnet(&dir, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    dir
}

#[test]
fn a_cnn_trains_and_learns_the_toy_classes() {
    let dir = train_cnn("cnn_train", &["--epochs", "20", "--out", "cnn.safetensors"]);
    let out = dropnet(&dir, &["eval", "--model", "cnn.safetensors", "--data", "toy", "--json"]);
    let result = last_json(&out);
    // each class lights one row of the image: a network that learned anything is far below the
    // 2/3 error of chance on the 90 test examples
    assert_eq!(result["n"], 90, "{result}");
    assert!(result["error"].as_f64().unwrap() < 0.2, "{result}");
}

#[test]
fn info_lists_every_layer_with_its_kind_output_shape_and_parameters() {
    let dir = train_cnn("cnn_info", &["--epochs", "1", "--out", "cnn.safetensors"]);
    let info = last_json(&dropnet(&dir, &["info", "--model", "cnn.safetensors", "--json"]));
    let layers = info["layers"].as_array().unwrap();
    let kinds: Vec<&str> = layers.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["conv", "maxpool", "dense"], "{info}");
    let shapes: Vec<serde_json::Value> = layers.iter().map(|l| l["output_shape"].clone()).collect();
    assert_eq!(shapes, [serde_json::json!([4, 4, 4]), serde_json::json!([4, 2, 2]), serde_json::json!([3])]);
    // conv: 4 filters of 3·3·1 weights and a bias each; dense: 3 × 16 weights and 3 biases
    let params: Vec<u64> = layers.iter().map(|l| l["params"].as_u64().unwrap()).collect();
    assert_eq!(params, [4 * 9 + 4, 0, 3 * 16 + 3]);
    // every module of the stack belongs to one layer, flatten (3) to the dense layer after it
    let modules: Vec<serde_json::Value> = layers.iter().map(|l| l["modules"].clone()).collect();
    assert_eq!(modules, [serde_json::json!([0, 1]), serde_json::json!([2, 2]), serde_json::json!([3, 5])], "{info}");
}

#[test]
fn the_model_file_uses_nn_sequential_names_and_pytorch_layouts() {
    let dir = train_cnn("cnn_names", &["--epochs", "1", "--out", "cnn.safetensors"]);
    let h = header(&std::fs::read(dir.join("cnn.safetensors")).unwrap());
    assert_eq!(h["__metadata__"]["format"], "dropnet-model-2");
    assert_eq!(h["0.weight"]["shape"], serde_json::json!([4, 1, 3, 3]), "conv as nn.Conv2d: {h}");
    assert_eq!(h["0.bias"]["shape"], serde_json::json!([4]));
    assert_eq!(h["5.weight"]["shape"], serde_json::json!([3, 16]), "dense as nn.Linear, module 5: {h}");
    for module in ["1", "2", "3", "4"] {
        assert!(h.get(format!("{module}.weight")).is_none(), "module {module} has no parameters: {h}");
    }
}

#[test]
fn monte_carlo_prediction_works_on_a_cnn() {
    let dir = train_cnn("cnn_mc", &["--epochs", "2", "--out", "cnn.safetensors"]);
    let out = dropnet(
        &dir,
        &["predict", "--model", "cnn.safetensors", "--data", "toy", "--mc", "8", "--limit", "3", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // one line per example, then a summary line
    let examples = |out: &std::process::Output| -> Vec<serde_json::Value> {
        let text = String::from_utf8_lossy(&out.stdout);
        let lines = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap());
        lines.filter(|l| l.get("index").is_some()).collect()
    };
    let lines = examples(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        let mean: Vec<f64> = line["mean"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(mean.len(), 3);
        // the mean of 8 softmax vectors is a probability vector
        assert!((mean.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{line}");
    }
    // the same call gives the same numbers (masks are addressed, not drawn from a global state)
    let again = dropnet(
        &dir,
        &["predict", "--model", "cnn.safetensors", "--data", "toy", "--mc", "8", "--limit", "3", "--json"],
    );
    assert_eq!(lines, examples(&again));
}
