//! `dropnet bench`: the workloads run and report the fields SPEC.md and the speed issue name.
//! (Speed itself is recorded in BENCHMARKS.md, never asserted by a test.)

mod common;
use common::*;

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{}", stderr(out));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_partial_w1_on_the_shipped_mnist_reports_every_field() {
    // `--steps 40`: the workload's code path and its JSON, not its speed (a partial run says so).
    let dir = temp_dir("bench_w1");
    let data = mnist_dir();
    let lines = json_lines(&dropnet(
        &dir,
        &["--threads", "2", "bench", "--workload", "w1", "--data", data.to_str().unwrap(), "--steps", "40", "--json"],
    ));
    let w1 = &lines[0];
    assert_eq!(w1["workload"], "w1");
    assert_eq!(w1["threads"], 2);
    assert_eq!(w1["steps"], 40, "a partial run must say how many steps it timed: {w1}");
    for field in ["samples_per_s", "epoch_s", "limit_samples_per_s", "fraction_of_limit"] {
        assert!(w1[field].as_f64().unwrap() > 0.0, "{field}: {w1}");
    }
    let fraction = w1["samples_per_s"].as_f64().unwrap() / w1["limit_samples_per_s"].as_f64().unwrap();
    assert!((fraction - w1["fraction_of_limit"].as_f64().unwrap()).abs() < 1e-9);
    // 60 steps of the SPEC network (20 warm-up, 40 timed) already learn far beyond chance (0.9)
    assert!(w1["test_error"].as_f64().unwrap() < 0.5, "{w1}");
    // 128 rows of ceil(784/64) + 2·ceil(1024/64) 64-bit words
    assert_eq!(w1["mask_bytes_per_step"], 128 * (13 + 16 + 16) * 8);
    // the step times are ordered, and the 40 steps fit between the fastest and slowest
    let t = |q: &str| w1["step_ms"][q].as_f64().unwrap();
    assert!(0.0 < t("min") && t("min") <= t("median") && t("median") <= t("p90") && t("p90") <= t("max"), "{w1}");
    let timed_ms = w1["epoch_s"].as_f64().unwrap() * 1e3;
    assert!(40.0 * t("min") <= timed_ms && timed_ms <= 40.0 * t("max") * 1.01 + 5.0, "{w1}");
}

#[test]
fn steps_outside_the_epoch_or_without_w1_or_w4_are_errors() {
    let dir = temp_dir("bench_steps");
    let out = dropnet(&dir, &["bench", "--workload", "w1", "--steps", "470"]);
    assert!(!out.status.success() && stderr(&out).contains("--steps 470"), "{}", stderr(&out));
    let out = dropnet(&dir, &["bench", "--workload", "w2", "--steps", "10"]);
    assert!(!out.status.success() && stderr(&out).contains("--steps applies to W1 and W4 only"), "{}", stderr(&out));
}

#[test]
fn a_partial_w4_reports_every_field() {
    // `--steps 5`: the CNN workload's code path and its JSON, not its speed
    let dir = temp_dir("bench_w4");
    let data = mnist_dir();
    let lines = json_lines(&dropnet(
        &dir,
        &["--threads", "2", "bench", "--workload", "w4", "--data", data.to_str().unwrap(), "--steps", "5", "--json"],
    ));
    let w4 = &lines[0];
    assert_eq!(w4["workload"], "w4");
    assert_eq!(w4["steps"], 5, "{w4}");
    for field in ["samples_per_s", "gflops", "limit_samples_per_s", "fraction_of_limit", "test_error"] {
        assert!(w4[field].as_f64().unwrap() > 0.0, "{field}: {w4}");
    }
    // gflops is samples/s times SPEC.md's 82,049,024 FLOP per sample
    let gflops = w4["samples_per_s"].as_f64().unwrap() * 82_049_024.0 / 1e9;
    assert!((gflops / w4["gflops"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{w4}");
    let fraction = w4["samples_per_s"].as_f64().unwrap() / w4["limit_samples_per_s"].as_f64().unwrap();
    assert!((fraction - w4["fraction_of_limit"].as_f64().unwrap()).abs() < 1e-9, "{w4}");
}

#[test]
fn w5_predicts_every_test_image_and_reports_its_limit() {
    // the whole workload (10,000 images × 50 samples): its JSON, not its speed
    let dir = temp_dir("bench_w5");
    let data = mnist_dir();
    let lines = json_lines(&dropnet(
        &dir,
        &["--threads", "2", "bench", "--workload", "w5", "--data", data.to_str().unwrap(), "--json"],
    ));
    let w5 = &lines[0];
    assert_eq!(w5["workload"], "w5");
    assert_eq!((w5["examples"].as_u64(), w5["mc_samples"].as_u64()), (Some(10_000), Some(50)), "{w5}");
    let per_s = w5["examples_per_s"].as_f64().unwrap();
    assert!((per_s * w5["wall_s"].as_f64().unwrap() / 10_000.0 - 1.0).abs() < 1e-9, "{w5}");
    // the limit is the 1024³ rate over SPEC.md's 186,163,200 FLOP per example
    let fraction = per_s / w5["limit_examples_per_s"].as_f64().unwrap();
    assert!((fraction - w5["fraction_of_limit"].as_f64().unwrap()).abs() < 1e-9, "{w5}");
    let out = dropnet(&dir, &["bench", "--workload", "w5", "--steps", "5"]);
    assert!(!out.status.success() && stderr(&out).contains("--steps applies to W1 and W4 only"), "{}", stderr(&out));
}

#[test]
fn w1_refuses_data_that_is_not_mnist() {
    let dir = temp_dir("bench_w1_toy");
    std::fs::create_dir(dir.join("toy")).unwrap();
    write_toy_idx(&dir.join("toy"), 60, 10, true);
    let out = dropnet(&dir, &["bench", "--workload", "w1", "--data", "toy"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not MNIST"), "{}", stderr(&out));
}

#[test]
fn w2_and_w3_report_their_fields() {
    let dir = temp_dir("bench_w23");
    let lines = json_lines(&dropnet(&dir, &["bench", "--workload", "w2", "--json"]));
    for field in ["fwd_gbps", "bwd_gbps", "copy_gbps"] {
        assert!(lines[0][field].as_f64().unwrap() > 0.0, "{field}: {}", lines[0]);
    }
    assert_eq!((&lines[0]["elements"], &lines[0]["variant"]), (&(1 << 25).into(), &"bernoulli".into()));
    // the variants: Gaussian keeps a factor of 4 bytes per element, alpha a bit
    let gaussian = json_lines(&dropnet(&dir, &["bench", "--workload", "w2", "--variant", "gaussian", "--json"]));
    assert_eq!((&gaussian[0]["variant"], &gaussian[0]["mask_bytes"]), (&"gaussian".into(), &(4 << 25).into()));
    let alpha = json_lines(&dropnet(&dir, &["bench", "--workload", "w2", "--variant", "alpha", "--json"]));
    assert_eq!((&alpha[0]["variant"], &alpha[0]["mask_bytes"]), (&"alpha".into(), &(1 << 22).into()));
    assert!(alpha[0]["fwd_of_copy"].as_f64().unwrap() > 0.0, "{}", alpha[0]);
    assert_fails(
        &dropnet(&dir, &["bench", "--workload", "w2", "--variant", "dropconnect"]),
        &["--variant 'dropconnect'"],
    );
    assert_fails(&dropnet(&dir, &["bench", "--workload", "w3", "--variant", "alpha"]), &["--variant applies to W2"]);
    let lines = json_lines(&dropnet(&dir, &["bench", "--workload", "w3", "--json"]));
    let gflops = lines[0]["gflops"].as_object().unwrap();
    // plain products at 1024³ and at W1's shapes: forward z = ã·Wᵀ (128x784x1024), dW = dzᵀ·ã
    // (1024x128x784), the output layer's forward (128x1024x10)
    for shape in ["1024x1024x1024", "128x784x1024", "1024x128x784", "128x1024x10"] {
        assert!(gflops[shape].as_f64().unwrap() > 0.0, "{shape}: {gflops:?}");
    }
}
