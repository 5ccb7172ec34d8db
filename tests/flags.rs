//! Flags that contradict each other, would have no effect, or are out of range: each is an error
//! that names the flag (or the recipe key) the user gave, before any work is done.

mod common;
use common::*;

#[test]
fn a_recipe_value_is_named_as_the_recipe_key() {
    let dir = toy_dir("flags_recipe_keep");
    std::fs::write(dir.join("r.toml"), "keep = [0.8, 0.5, 0.5]\nepochs = 1\n").unwrap();
    let out = dropnet(&dir, &["train", "--data", "toy", "--recipe", "r.toml", "--arch", "16-12-3"]);
    assert_fails(&out, &["keep (in r.toml) has 3 values for the 2 dense layers of --arch 16-12-3"]);
    assert!(!stderr(&out).contains("--keep"), "{}", stderr(&out));
    // a flag given on the command line replaces the recipe's value instead
    let out =
        dropnet(&dir, &["train", "--data", "toy", "--recipe", "r.toml", "--arch", "16-12-3", "--keep", "0.9,0.9"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(dir.join("bad.toml"), "epochs = 2\nlearning_rate = 0.1\n").unwrap();
    assert_fails(&dropnet(&dir, &["train", "--data", "toy", "--recipe", "bad.toml"]), &["bad.toml", "learning_rate"]);
}

#[test]
fn contradictory_and_ineffective_flags_are_errors() {
    let dir = toy_dir("flags_conflicts");
    std::fs::write(dir.join("keep.json"), "[0.9, 0.7]").unwrap();
    let cases: [(&[&str], &str); 9] = [
        (&["--patience", "3"], "--patience needs --val N"),
        (&["--keep-file", "keep.json"], "--keep and --keep-file both set the keep probabilities"),
        (&["--optimizer", "adam", "--momentum", "0.5"], "--momentum has no effect with --optimizer adam"),
        (&["--momentum-start", "0.5"], "--momentum-start needs --momentum-ramp-epochs"),
        (&["--momentum-ramp-epochs", "5"], "--momentum-ramp-epochs needs --momentum-start"),
        (&["--checkpoint-every", "0"], "--checkpoint-every must be at least 1"),
        (&["--epochs", "0"], "--epochs is 0"),
        (&["--val", "300"], "--val 300 leaves no training examples"),
        (&["--lr-schedule", "step:0:0.5"], "--lr-schedule 'step:0:0.5'"),
    ];
    for (extra, expected) in cases {
        let out = dropnet(&dir, &toy_args(extra));
        assert_fails(&out, &[expected]);
        assert!(!dir.join("model.safetensors").exists());
    }
}

#[test]
fn csv_flags_with_idx_data_are_errors() {
    let dir = toy_dir("flags_csv_with_idx");
    std::fs::write(dir.join("t.csv"), "0,1\n").unwrap();
    assert_fails(
        &dropnet(&dir, &toy_args(&["--test-data", "t.csv"])),
        &["--test-data applies to CSV data", "toy is a folder"],
    );
    assert_fails(&dropnet(&dir, &toy_args(&["--label-col", "3"])), &["--label-col applies to CSV data"]);
    assert!(dropnet(&dir, &toy_args(&["--epochs", "1"])).status.success());
    let eval = ["eval", "--model", "model.safetensors", "--data", "toy"];
    assert_fails(&dropnet(&dir, &[&eval[..], &["--label-col", "2"]].concat()), &["--label-col applies to CSV data"]);
}

#[test]
fn monte_carlo_sample_counts_and_limits_are_checked() {
    let dir = toy_dir("flags_mc");
    assert!(dropnet(&dir, &toy_args(&["--epochs", "1"])).status.success());
    for command in ["eval", "predict"] {
        let base = [command, "--model", "model.safetensors", "--data", "toy"];
        assert_fails(&dropnet(&dir, &[&base[..], &["--mc", "0"]].concat()), &["--mc 0: give 1 to 65536"]);
        assert_fails(&dropnet(&dir, &[&base[..], &["--mc", "100000"]].concat()), &["--mc 100000"]);
    }
    assert_fails(
        &dropnet(&dir, &["predict", "--model", "model.safetensors", "--data", "toy", "--limit", "0"]),
        &["--limit 0"],
    );
}

#[test]
fn thread_counts_and_kernel_requests_are_checked() {
    let dir = temp_dir("flags_threads");
    assert_fails(&dropnet(&dir, &["--threads", "0", "gradcheck"]), &["--threads 0: give 1 to 1024"]);
    assert_fails(&dropnet(&dir, &["--threads", "100000", "gradcheck"]), &["--threads 100000"]);
    let run = |kernels: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dropnet"))
            .env("DROPNET_KERNELS", kernels)
            .args(["--threads", "1", "gradcheck"])
            .output()
            .unwrap()
    };
    assert_fails(&run("sse9"), &["DROPNET_KERNELS=sse9: expected auto, portable, avx2 or avx512"]);
    assert!(run("portable").status.success());
    let avx512 = run("avx512");
    if dropnet::cpu::detected_avx512() {
        assert!(avx512.status.success(), "{}", stderr(&avx512));
    } else {
        eprintln!("skipped the avx512 success case: this CPU lacks {}", dropnet::cpu::AVX512_FEATURES);
        assert_fails(&avx512, &["DROPNET_KERNELS=avx512: this CPU lacks"]);
    }
}

#[test]
fn a_huge_architecture_is_refused_before_anything_is_allocated() {
    let dir = toy_dir("flags_huge_arch");
    let mut args = toy_args(&["--epochs", "1"]);
    args[4] = "1-4611686018427387904";
    args.drain(5..7);
    assert_fails(&dropnet(&dir, &args), &["--arch '1-4611686018427387904'", "each in 1..=16777216"]);
    args[4] = "16-16777216-16777216-3";
    assert_fails(&dropnet(&dir, &args), &["--arch", "more than 268435456 values"]);
}
