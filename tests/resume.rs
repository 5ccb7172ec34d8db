//! Resume means what it says: the file defines the run, the continuation is bit for bit, early
//! stopping and interruption included; signals save a resumable checkpoint; a run that diverges
//! stops and says truthfully what is on disk.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// One epoch of a history without its times: train loss and error, validation and test error.
type Epoch = (f64, f64, Option<f64>, Option<f64>);

/// The weights and optimizer state of a model file, as bits, and its history without times.
fn fingerprint(path: &Path) -> (Vec<u32>, Vec<u32>, Vec<Epoch>) {
    let saved = dropnet::model_file::load(path).unwrap();
    let weights = saved.net.params().iter().flat_map(|p| p.value.iter().map(|v| v.to_bits())).collect();
    let slots = saved.slots.iter().flat_map(|s| s.first.iter().chain(&s.second).map(|v| v.to_bits())).collect();
    let history = saved
        .training
        .unwrap()
        .history
        .iter()
        .map(|r| (r.train_loss, r.train_error.expect("a classification run"), r.val_error, r.test_error))
        .collect();
    (weights, slots, history)
}

#[test]
fn every_flag_that_would_change_the_run_is_refused_with_resume() {
    let dir = toy_dir("resume_flags");
    assert!(dropnet(&dir, &toy_args(&["--epochs", "1"])).status.success());
    let refused: [(&str, &str); 24] = [
        ("--data", "toy"),
        ("--test-data", "t.csv"),
        ("--label-col", "1"),
        ("--standardize", "true"),
        ("--arch", "16-12-3"),
        ("--keep", "0.9,0.7"),
        ("--keep-file", "k.json"),
        ("--scaling", "standard"),
        ("--activation", "tanh"),
        ("--loss", "mse"),
        ("--init", "he"),
        ("--val", "10"),
        ("--batch", "16"),
        ("--optimizer", "adam"),
        ("--lr", "0.1"),
        ("--lr-schedule", "exp:0.9"),
        ("--momentum", "0.5"),
        ("--momentum-start", "0.5"),
        ("--momentum-ramp-epochs", "3"),
        ("--scale-lr-by-momentum", "true"),
        ("--weight-decay", "0.1"),
        ("--max-norm", "3"),
        ("--seed", "7"),
        ("--recipe", "r.toml"),
    ];
    std::fs::write(dir.join("r.toml"), "lr = 0.1\n").unwrap();
    let before = snapshot(&dir);
    for (flag, value) in refused {
        let out = dropnet(&dir, &["train", "--resume", "model.safetensors", "--epochs", "3", flag, value]);
        assert_fails(&out, &[flag, "cannot be used with --resume: the model file defines the run"]);
    }
    assert!(snapshot(&dir) == before);
    // the ones that may be given, and the total that must grow
    assert_fails(
        &dropnet(&dir, &["train", "--resume", "model.safetensors", "--epochs", "1"]),
        &["--epochs 1", "has done 1 epochs"],
    );
    let out = dropnet(
        &dir,
        &[
            "train",
            "--resume",
            "model.safetensors",
            "--epochs",
            "2",
            "--checkpoint-every",
            "1",
            "--log",
            "l.jsonl",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_fails(
        &dropnet(&dir, &["train", "--resume", "model.safetensors", "--epochs", "4", "--patience", "2"]),
        &["--patience needs a validation split"],
    );
}

#[test]
fn a_resumed_early_stopping_run_stops_where_its_twin_does_bit_for_bit() {
    // A small net on MNIST with a validation split of 2000: its validation error stalls after a
    // few epochs (patience 2), with errors that are multiples of 1/2000, so ties decide the
    // stop and a best error read back one ulp off (the bug this guards against) changes it.
    let dir = temp_dir("resume_patience");
    let data = mnist_dir();
    let run = |epochs: &str, out: &str| {
        let args = ["train", "--data", data.to_str().unwrap(), "--arch", "784-32-10", "--lr", "0.1", "--val", "2000"];
        dropnet(&dir, &[&args[..], &["--patience", "2", "--epochs", epochs, "--out", out, "--json"]].concat())
    };
    let straight = run("40", "straight.safetensors");
    assert!(straight.status.success(), "{}", stderr(&straight));
    let report = last_json(&straight);
    assert_eq!(report["stopped"], "early", "the straight run must stop early for this test to mean anything");
    let stopped_at = report["epochs"].as_u64().unwrap();
    assert!(stopped_at > 2, "stopped at {stopped_at}");
    assert!(run("2", "twin.safetensors").status.success());
    let resumed = dropnet(&dir, &["train", "--resume", "twin.safetensors", "--epochs", "40", "--json"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(last_json(&resumed)["stopped"], "early");
    assert_eq!(last_json(&resumed)["epochs"].as_u64().unwrap(), stopped_at);
    assert_eq!(fingerprint(&dir.join("straight.safetensors")), fingerprint(&dir.join("twin.safetensors")));
}

/// Start a run on the shipped MNIST, wait until its first epoch is reported, send `signal`; the
/// process's output.
fn interrupted_run(dir: &Path, args: &[&str], signal: &str, twice: bool) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dropnet"))
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        let ready = if twice { line.starts_with("optimizer ") } else { line.starts_with("epoch   1 ") };
        line.clear();
        if ready {
            break;
        }
    }
    let pid = child.id().to_string();
    let kill = |sig: &str| assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    kill(signal);
    if twice {
        kill(signal);
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let mut out = child.wait_with_output().unwrap();
    out.stderr = format!("{seen}{rest}").into_bytes();
    out
}

#[test]
fn sigterm_saves_a_checkpoint_that_resumes_bit_for_bit() {
    let dir = temp_dir("resume_signal");
    let data = mnist_dir();
    let args = |out: &'static str| -> Vec<String> {
        [
            "train",
            "--data",
            data.to_str().unwrap(),
            "--arch",
            "784-64-10",
            "--epochs",
            "6",
            "--lr",
            "0.05",
            "--val",
            "1000",
            "--out",
            out,
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let straight: Vec<String> = args("straight.safetensors");
    let straight: Vec<&str> = straight.iter().map(String::as_str).collect();
    assert!(dropnet(&dir, &straight).status.success());
    let cut: Vec<String> = args("cut.safetensors");
    let cut: Vec<&str> = cut.iter().map(String::as_str).collect();
    let out = interrupted_run(&dir, &cut, "-TERM", false);
    let err = stderr(&out);
    if out.status.code() == Some(0) {
        eprintln!("skipped the comparison: the run finished before SIGTERM arrived");
        return;
    }
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert_eq!(last_json(&out)["stopped"], "interrupted");
    assert!(
        err.contains("SIGTERM: stopped") && err.contains("Continue with: dropnet train --resume cut.safetensors"),
        "{err}"
    );
    let resumed = dropnet(&dir, &["train", "--resume", "cut.safetensors", "--json"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(last_json(&resumed)["epochs"], 6);
    assert_eq!(fingerprint(&dir.join("straight.safetensors")), fingerprint(&dir.join("cut.safetensors")));
}

#[test]
fn a_second_signal_exits_at_once_and_writes_nothing() {
    // A network whose steps take a while, so that both signals arrive within the first one.
    let dir = temp_dir("resume_two_signals");
    let data = mnist_dir();
    let args = [
        "train",
        "--data",
        data.to_str().unwrap(),
        "--arch",
        "784-4096-4096-10",
        "--epochs",
        "1",
        "--out",
        "m.safetensors",
    ];
    let out = interrupted_run(&dir, &args, "-INT", true);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(!dir.join("m.safetensors").exists(), "the second signal should end the run before any save");
    assert!(!stderr(&out).contains("panicked"));
}

#[test]
fn a_diverging_run_stops_and_says_what_is_on_disk() {
    let dir = toy_dir("resume_diverge");
    // lr 1e4 from the first step: the loss runs away at once, and nothing was ever written
    let mut a = toy_args(&["--epochs", "5", "--json"]);
    a[8] = "1e4";
    let out = dropnet(&dir, &a);
    assert_fails(&out, &["training diverged in epoch 1", "nothing was written"]);
    assert_eq!(last_json(&out)["stopped"], "diverged");
    assert!(!dir.join("model.safetensors").exists());
    // lr 0.1 in epoch 1, then ×1e30 with a checkpoint after every epoch: the file keeps epoch 1
    let out = dropnet(&dir, &toy_args(&["--epochs", "4", "--lr-schedule", "exp:1e30", "--checkpoint-every", "1"]));
    assert_fails(
        &out,
        &["diverged in epoch 2", "model.safetensors keeps the last good weights: the checkpoint after epoch 1"],
    );
    let saved = dropnet::model_file::load(&dir.join("model.safetensors")).unwrap();
    assert_eq!(saved.training.unwrap().epochs_done, 1);
    // resumed, diverging again: the file is untouched and the message says what it holds
    let before = std::fs::read(dir.join("model.safetensors")).unwrap();
    let out = dropnet(&dir, &["train", "--resume", "model.safetensors", "--epochs", "4"]);
    assert_fails(
        &out,
        &["diverged in epoch 2", "model.safetensors was not changed: it holds the run as it was after epoch 1"],
    );
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), before);
}

#[test]
fn a_file_without_a_training_state_or_data_cannot_be_resumed() {
    let dir = toy_dir("resume_bad_files");
    assert!(dropnet(&dir, &toy_args(&["--epochs", "1"])).status.success());
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let no_state = edited(&bytes, |h| {
        h["__metadata__"].as_object_mut().unwrap().remove("training");
    });
    std::fs::write(dir.join("plain.safetensors"), no_state).unwrap();
    assert_fails(
        &dropnet(&dir, &["train", "--resume", "plain.safetensors", "--epochs", "2"]),
        &["plain.safetensors", "no training state"],
    );
    let no_data = edited(&bytes, |h| {
        let mut t = meta(h, "training");
        t.as_object_mut().unwrap().remove("data");
        set_meta(h, "training", &t);
    });
    std::fs::write(dir.join("old.safetensors"), no_data).unwrap();
    assert_fails(
        &dropnet(&dir, &["train", "--resume", "old.safetensors", "--epochs", "2"]),
        &["old.safetensors", "does not record the data"],
    );
}
