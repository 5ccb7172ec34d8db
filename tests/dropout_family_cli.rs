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

/// The parameters of a model file, tensor by tensor, as bits.
fn parameter_bits(path: &std::path::Path) -> Vec<(String, Vec<u32>)> {
    let saved = dropnet::model_file::load(path).unwrap();
    saved.net.params().iter().map(|p| (p.name.clone(), p.value.iter().map(|v| v.to_bits()).collect())).collect()
}

#[test]
fn concrete_dropout_learns_its_keep_logs_it_and_resumes_bit_for_bit() {
    let dir = toy_dir("family_concrete");
    let arch = "16,concrete0.8,dense12,relu,concrete0.5,dense3";
    let adam = ["--optimizer", "adam"];
    let run = |extra: &[&str]| {
        let mut args = adam.to_vec();
        args.extend_from_slice(extra);
        let out = train_toy(&dir, arch, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let report = last_json(&run(&["--log", "log.jsonl", "--out", "c.safetensors", "--json"]));
    assert!(report["test_error"].as_f64().unwrap() < 0.1, "{report}");
    // the log: every epoch, each concrete token's learned keep, named by its dense layer's module
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(epochs.len(), 8);
    for e in &epochs {
        let keep = e["keep"].as_array().unwrap();
        assert_eq!(keep.iter().map(|k| k["layer"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 4], "{e}");
        for k in keep {
            let (lo, mean, hi) = (k["min"].as_f64().unwrap(), k["mean"].as_f64().unwrap(), k["max"].as_f64().unwrap());
            assert!(0.0 < lo && lo <= mean && mean <= hi && hi < 1.0, "{k}");
        }
    }
    let last = &epochs[7]["keep"][0];
    // the keep moved from where it started (0.8), unit by unit
    assert!(last["max"].as_f64().unwrap() - last["min"].as_f64().unwrap() > 1e-4, "{last}");
    // info: the full vector, whose summary is the log's
    let info = last_json(&dropnet(&dir, &["info", "--model", "c.safetensors", "--json"]));
    let keep: Vec<f64> =
        info["learned_keep"][0]["keep"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(keep.len(), 16);
    assert!((keep.iter().sum::<f64>() / 16.0 - last["mean"].as_f64().unwrap()).abs() < 1e-12, "{info}");
    let text = String::from_utf8(dropnet(&dir, &["info", "--model", "c.safetensors"]).stdout).unwrap();
    assert!(text.contains("concrete0.8,dense12,relu (learned keep"), "{text}");
    // the logits are parameters with optimizer state, in the file
    let h = header(&std::fs::read(dir.join("c.safetensors")).unwrap());
    assert_eq!(h["1.keep_logit"]["shape"], serde_json::json!([16]), "{h}");
    assert!(h.get("optimizer.4.keep_logit.second").is_some(), "{h}");
    // Monte-Carlo prediction samples hard masks at the learned keep
    let eval = dropnet(&dir, &["eval", "--model", "c.safetensors", "--data", "toy", "--mc", "10", "--json"]);
    assert!(last_json(&eval)["mc_error"].as_f64().unwrap() < 0.2, "{}", stderr(&eval));
    // half the epochs, then resumed: the same parameters, bit for bit
    let mut half = vec!["train", "--data", "toy", "--arch", arch, "--lr", "0.1", "--batch", "16", "--epochs", "4"];
    half.extend(adam.iter().chain(&["--out", "half.safetensors"]));
    assert!(dropnet(&dir, &half).status.success());
    let resumed = dropnet(&dir, &["train", "--resume", "half.safetensors", "--epochs", "8"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(parameter_bits(&dir.join("half.safetensors")), parameter_bits(&dir.join("c.safetensors")));
    // one keep per layer
    run(&["--concrete-per", "layer", "--concrete-temperature", "0.2", "--out", "layer.safetensors"]);
    let info = last_json(&dropnet(&dir, &["info", "--model", "layer.safetensors", "--json"]));
    let keep = info["learned_keep"][1]["keep"].as_array().unwrap();
    assert!(keep.len() == 12 && keep.iter().all(|k| *k == keep[0]), "{info}");
    let h = header(&std::fs::read(dir.join("layer.safetensors")).unwrap());
    assert_eq!(h["4.keep_logit"]["shape"], serde_json::json!([1]), "{h}");
    assert_eq!(meta(&h, "architecture")["layers"][0]["concrete"]["temperature"], 0.2, "{h}");
}

#[test]
fn concrete_dropout_refuses_what_it_cannot_learn() {
    let dir = toy_dir("family_concrete_refusals");
    let mlp = "16,concrete0.8,dense12,relu,dense3";
    for (arch, extra, expected) in [
        (
            "16,keep0.8,dense12,relu,dense3",
            &["--concrete-temperature", "0.2"][..],
            "--concrete-temperature has no effect",
        ),
        ("16,keep0.8,dense12,relu,dense3", &["--lengthscale", "0.1"][..], "--lengthscale has no effect"),
        (mlp, &["--concrete-temperature", "0"][..], "--concrete-temperature 0: expected a positive"),
        (mlp, &["--scaling", "standard"][..], "no standard convention"),
        ("16,concrete1,dense12,relu,dense3", &[][..], "strictly between 0 and 1"),
        ("16,concrete0.5,relu,dense3", &[][..], "needs the weights it feeds"),
        ("1x4x4,conv2k3,concrete0.5,maxpool2,flatten,dense3", &[][..], "needs the weights it feeds"),
    ] {
        assert_fails(&train_toy(&dir, arch, extra), &[expected]);
    }
    std::fs::write(dir.join("k.json"), format!("[{:?}, 0.9]", vec![0.7; 16])).unwrap();
    let per_unit = train_toy(
        &dir,
        "16,concrete0.8,dense12,relu,keep0.9,dense3",
        &["--keep-file", "k.json", "--concrete-per", "layer"],
    );
    assert_fails(&per_unit, &["--concrete-per layer needs one starting keep"]);
}

#[test]
fn concrete_dropout_learns_a_keep_per_channel_before_a_convolution() {
    let dir = toy_dir("family_concrete_conv");
    let arch = "1x4x4,concrete0.9,conv3k3p1,relu,concrete0.8,conv2k3,relu,flatten,dense3";
    let out = train_toy(&dir, arch, &["--optimizer", "adam", "--out", "c.safetensors", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(last_json(&out)["test_error"].as_f64().unwrap() < 0.2, "{}", stderr(&out));
    // one logit per channel of each input map: 1, then 3
    let h = header(&std::fs::read(dir.join("c.safetensors")).unwrap());
    assert_eq!(h["1.keep_logit"]["shape"], serde_json::json!([1]), "{h}");
    assert_eq!(h["4.keep_logit"]["shape"], serde_json::json!([3]), "{h}");
    let info = last_json(&dropnet(&dir, &["info", "--model", "c.safetensors", "--json"]));
    assert_eq!(info["learned_keep"][1]["keep"].as_array().unwrap().len(), 3, "{info}");
    let eval = dropnet(&dir, &["eval", "--model", "c.safetensors", "--data", "toy", "--mc", "5", "--json"]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    // a keep per unit of a feature map is not a keep per channel
    std::fs::write(dir.join("k.json"), format!("[{:?}, 0.8]", vec![0.7; 16])).unwrap();
    let per_unit = train_toy(&dir, arch, &["--keep-file", "k.json"]);
    assert_fails(&per_unit, &["16 keep values for 1 groups", "one keep per channel"]);
}
