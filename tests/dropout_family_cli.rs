//! The dropout family through the command line, on the toy data of `common`: Gaussian dropout
//! trains, predicts with Monte-Carlo samples, survives the model file, and refuses the standard
//! convention.

mod common;
use common::*;

fn train_toy(dir: &std::path::Path, arch: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "--data", "toy", "--arch", arch, "--lr", "0.1", "--batch", "16", "--epochs", "8"];
    args.extend_from_slice(extra);
    dropnet(dir, &args)
}

#[test]
fn gaussian_dropout_trains_predicts_and_reads_back() {
    let dir = toy_dir("family_gaussian");
    let arch = "16,gaussian0.9,dense12,relu,gaussian0.6,dense3";
    let out = train_toy(&dir, arch, &["--out", "g.safetensors", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // the toy classes are one lit row each: a working network separates them
    let report = last_json(&out);
    assert!(report["test_error"].as_f64().unwrap() < 0.1, "{report}");
    let info = last_json(&dropnet(&dir, &["info", "--model", "g.safetensors", "--json"]));
    assert_eq!(info["arch"], arch, "{info}");
    let h = header(&std::fs::read(dir.join("g.safetensors")).unwrap());
    assert_eq!(meta(&h, "architecture")["layers"][0]["noise"], "gaussian", "{h}");
    // MC prediction draws noise: the samples differ, so some class probability has a spread;
    // the same command twice gives the same predictions (the summary line holds timings)
    let predict = ["predict", "--model", "g.safetensors", "--data", "toy", "--mc", "20", "--json", "--limit", "5"];
    let lines = |out: std::process::Output| {
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines().filter(|l| !l.contains("\"summary\"")).map(str::to_string).collect::<Vec<_>>()
    };
    let (a, b) = (lines(dropnet(&dir, &predict)), lines(dropnet(&dir, &predict)));
    assert_eq!((a.len(), &a), (5, &b));
    let first: serde_json::Value = serde_json::from_str(&a[0]).unwrap();
    assert!(first["std"].as_array().unwrap().iter().any(|s| s.as_f64().unwrap() > 0.0), "{first}");
    // evaluation mode is the identity: the same error as the run's last epoch reported
    let eval = last_json(&dropnet(&dir, &["eval", "--model", "g.safetensors", "--data", "toy", "--json"]));
    assert_eq!(eval["error"], report["test_error"], "{eval} {report}");
}

#[test]
fn gaussian_and_alpha_dropout_have_no_standard_convention() {
    let dir = toy_dir("family_no_standard");
    for token in ["gaussian0.9", "alpha0.9"] {
        let out = train_toy(&dir, &format!("16,{token},dense12,relu,dense3"), &["--scaling", "standard"]);
        assert_fails(&out, &[token, "no standard convention"]);
    }
}

#[test]
fn alpha_dropout_trains_a_selu_network() {
    let dir = toy_dir("family_alpha");
    let arch = "16,alpha0.95,dense12,selu,alpha0.9,dense12,selu,dense3";
    let out = train_toy(&dir, arch, &["--out", "a.safetensors", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    assert!(report["test_error"].as_f64().unwrap() < 0.1, "{report}");
    let h = header(&std::fs::read(dir.join("a.safetensors")).unwrap());
    assert_eq!(meta(&h, "architecture")["layers"][3]["noise"], "alpha", "{h}");
    let eval =
        last_json(&dropnet(&dir, &["eval", "--model", "a.safetensors", "--data", "toy", "--mc", "10", "--json"]));
    assert_eq!(eval["error"], report["test_error"], "{eval}");
    assert!(eval["mc_error"].as_f64().unwrap() < 0.2, "{eval}");
    assert_fails(&train_toy(&dir, arch, &["--init", "lecunn"]), &["--init 'lecunn'", "lecun"]);
}

#[test]
fn dropconnect_trains_predicts_and_refuses_what_it_cannot_mask() {
    let dir = toy_dir("family_dropconnect");
    let arch = "16,dropconnect0.8,dense12,relu,dropconnect0.6,dense3";
    let out = train_toy(&dir, arch, &["--out", "d.safetensors", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    assert!(report["test_error"].as_f64().unwrap() < 0.1, "{report}");
    let eval =
        last_json(&dropnet(&dir, &["eval", "--model", "d.safetensors", "--data", "toy", "--mc", "10", "--json"]));
    assert_eq!(eval["error"], report["test_error"], "{eval}");
    assert!(eval["mc_error"].as_f64().unwrap() < 0.2, "{eval}");
    let info = last_json(&dropnet(&dir, &["info", "--model", "d.safetensors", "--json"]));
    assert_eq!(info["arch"], arch, "{info}");
    // weights exist only in dense layers and convolutions; DropConnect is built for dense ones
    let conv = train_toy(&dir, "1x4x4,dropconnect0.5,conv2k3,relu,flatten,dense3", &[]);
    assert_fails(&conv, &["dropconnect masks the weights of a dense layer"]);
    let keep_file = dir.join("k.json");
    std::fs::write(&keep_file, "[[0.5, 0.6], 0.9]").unwrap();
    let per_unit = train_toy(&dir, "2,dropconnect0.5,dense4,relu,keep0.9,dense3", &["--keep-file", "k.json"]);
    assert_fails(&per_unit, &["dropconnect takes one keep probability, not 2"]);
}
