//! `dropnet train`, `eval`, `predict` and `info` end to end on the repository's MNIST and on toy
//! data: what they compute and write.

mod common;
use common::*;
use dropnet::model_file;

#[test]
fn mnist_one_epoch_learns() {
    // Real MNIST (the repository's data/mnist). A broken trainer sits near 0.9 error; one epoch of
    // a small dropout net reaches about 0.05.
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
    let out = dropnet(
        &dir,
        &toy_args(&["--epochs", "8", "--val", "60", "--json", "--log", "log.jsonl", "--plot", "curves.svg"]),
    );
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
    let straight = dropnet(&dir, &toy_args(&["--epochs", "4", "--out", "straight.safetensors", "--momentum", "0.5"]));
    assert!(straight.status.success(), "{}", stderr(&straight));
    let first = dropnet(&dir, &toy_args(&["--epochs", "2", "--out", "resumed.safetensors", "--momentum", "0.5"]));
    assert!(first.status.success());
    // written back to the file it resumes (no --out)
    let second = dropnet(&dir, &["train", "--resume", "resumed.safetensors", "--epochs", "4"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let a = model_file::load(&dir.join("straight.safetensors")).unwrap();
    let b = model_file::load(&dir.join("resumed.safetensors")).unwrap();
    for (pa, pb) in a.net.params().iter().zip(b.net.params()) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(pa.value), bits(pb.value), "{} differs", pa.name);
    }
    assert_eq!(a.slots, b.slots);
    // and the history is the same run (times aside)
    let epochs = |s: &model_file::Saved| -> Vec<(f64, Option<f64>)> {
        s.training.as_ref().unwrap().history.iter().map(|r| (r.train_loss, r.test_error)).collect()
    };
    assert_eq!(epochs(&a), epochs(&b));
}

#[test]
fn checkpoints_are_written_during_training() {
    let dir = toy_dir("toy_checkpoint");
    let out = dropnet(&dir, &toy_args(&["--epochs", "3", "--checkpoint-every", "1", "--out", "ck.safetensors"]));
    assert!(out.status.success());
    let saved = model_file::load(&dir.join("ck.safetensors")).unwrap();
    assert_eq!(saved.training.unwrap().epochs_done, 3);
}

#[test]
fn max_norm_bounds_every_unit() {
    let dir = toy_dir("toy_maxnorm");
    let mut a = toy_args(&["--epochs", "3", "--max-norm", "0.5"]);
    a[8] = "0.5"; // a large step, so that the constraint has work to do
    let out = dropnet(&dir, &a);
    assert!(out.status.success(), "{}", stderr(&out));
    let saved = model_file::load(&dir.join("model.safetensors")).unwrap();
    for p in saved.net.layers().iter().filter_map(|l| l.parameters()) {
        for j in 0..p.weight.rows() {
            let norm = p.weight.row(j).iter().map(|w| w * w).sum::<f32>().sqrt();
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
    let mut args = toy_args(&["--epochs", "1", "--keep-file", "keep.json"]);
    args.drain(5..7); // without --keep 0.9,0.7: both together are an error
    let out = dropnet(&dir, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let saved = model_file::load(&dir.join("model.safetensors")).unwrap();
    let keep = saved.net.noises()[0].keep().values().to_vec();
    assert_eq!(keep, per_unit);
    assert_eq!(saved.net.noises()[1].keep().values(), &[0.6; 12]);
}

#[test]
fn early_stopping_ends_a_run_that_stops_improving() {
    let dir = toy_dir("toy_early");
    let mut a = toy_args(&["--epochs", "50", "--val", "60", "--patience", "2", "--json"]);
    a[8] = "1e-12"; // learning too slowly to change the validation error
    let out = dropnet(&dir, &a);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    assert_eq!(report["stopped"], "early");
    // epoch 1 sets the best; epochs 2 and 3 do not beat it; patience 2 stops after epoch 3
    assert_eq!(report["epochs"], 3);
}
