//! Regression through the command line: CSV target columns, target standardisation, mse and
//! gaussian-nll, τ, the Monte-Carlo predictive distribution and its calibration, the refusals.
//! The data are made here from a fixed-seed generator, with known noise.

mod common;
use common::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A small deterministic generator (splitmix64) for the synthetic data.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-300), self.next());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Noise deviation of the homoscedastic data.
const NOISE: f64 = 0.1;

/// `n` rows `x1,x2,x3,y,y2` (with one target column the other is a feature) with x uniform in [−1, 1], y = 3·x1 − 2·x2 + x1·x3 + 10 + ε (ε of
/// deviation [`NOISE`], or 0.05 + 0.4·|x1| when `heteroscedastic`), y2 = 100·x2 + 5·ε'.
fn write_csv(path: &Path, n: usize, seed: u64, heteroscedastic: bool) {
    let mut g = Gen(seed);
    let mut text = String::from("x1,x2,x3,y,y2\n");
    for _ in 0..n {
        let (x1, x2, x3) = (2.0 * g.next() - 1.0, 2.0 * g.next() - 1.0, 2.0 * g.next() - 1.0);
        let sigma = if heteroscedastic { 0.05 + 0.4 * x1.abs() } else { NOISE };
        let y = 3.0 * x1 - 2.0 * x2 + x1 * x3 + 10.0 + sigma * g.normal();
        let y2 = 100.0 * x2 + 5.0 * g.normal();
        writeln!(text, "{x1},{x2},{x3},{y},{y2}").unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn data_dir(name: &str, heteroscedastic: bool) -> PathBuf {
    let dir = temp_dir(name);
    write_csv(&dir.join("train.csv"), 1500, 1, heteroscedastic);
    write_csv(&dir.join("test.csv"), 500, 2, heteroscedastic);
    dir
}

const TRAIN: [&str; 16] = [
    "train",
    "--data",
    "train.csv",
    "--test-data",
    "test.csv",
    "--optimizer",
    "adam",
    "--lr",
    "0.003",
    "--batch",
    "32",
    "--standardize",
    "--val",
    "300",
    "--out",
    "m.safetensors",
];

fn train(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<&str> = TRAIN.to_vec();
    args.extend_from_slice(extra);
    if !extra.contains(&"--epochs") {
        args.extend_from_slice(&["--epochs", "200"]);
    }
    args.push("--json");
    let out = dropnet(dir, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    last_json(&out)
}

fn predictions(dir: &Path, mc: &str) -> Vec<serde_json::Value> {
    let out = dropnet(dir, &["predict", "--model", "m.safetensors", "--data", "test.csv", "--mc", mc, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("summary").is_none())
        .collect()
}

#[test]
fn mse_regression_learns_the_target_and_its_mc_predictive_is_calibrated() {
    let dir = data_dir("regression_mse", false);
    let arch = "4,dense64,relu,keep0.9,dense1";
    let report =
        train(&dir, &["--arch", arch, "--target-col", "y", "--tau", "auto", "--log", "l.jsonl", "--plot", "p.svg"]);
    // the log has the regression figures per epoch, the plot the RMSE curves
    let log = std::fs::read_to_string(dir.join("l.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(epochs.len(), 200);
    for key in ["train_loss", "val_rmse", "test_rmse"] {
        assert!(epochs.iter().all(|e| e[key].is_number()), "{key}: {}", epochs[0]);
    }
    assert!(epochs[0].get("train_error").is_none() && epochs[0].get("test_error").is_none(), "{}", epochs[0]);
    assert_eq!(epochs[199]["test_rmse"], report["test_rmse"]);
    assert!(std::fs::read_to_string(dir.join("p.svg")).unwrap().contains("RMSE"));
    // The noise alone gives an RMSE of 0.1 (± 0.1/√(2·500) = 0.003 over 500 test examples); the
    // network's own error may add at most 0.05 here, where a linear fit of the x1·x3 term leaves 0.58.
    let test_rmse = report["test_rmse"].as_f64().unwrap();
    assert!(test_rmse < NOISE + 0.05, "{report}");
    assert!(report["val_rmse"].as_f64().unwrap() < NOISE + 0.05, "{report}");
    assert!(report.get("test_error").is_none(), "{report}");
    let tau = report["tau"].as_f64().unwrap();
    // τ is the precision of what the samples' spread leaves unexplained: the whole residual
    // (deviation ≈ 0.1) would give 100, so τ lies above a tenth of that
    assert!(tau > 10.0, "{report}");

    let eval =
        last_json(&dropnet(&dir, &["eval", "--model", "m.safetensors", "--data", "test.csv", "--mc", "50", "--json"]));
    assert_eq!(eval["n"], 500, "{eval}");
    assert_eq!(eval["tau"].as_f64(), Some(tau), "{eval}");
    assert!((eval["rmse"].as_f64().unwrap() - test_rmse).abs() < 1e-9, "{eval} {report}");
    assert!(eval["mc_rmse"].as_f64().unwrap() < NOISE + 0.05, "{eval}");
    // a calibrated normal predictive with the deviation of the RMSE (≤ 0.15) scores at least
    // −½ ln(2π·0.15²) − ½ = 0.48 nats; the miscalibration the z² bound below admits (mean z² up
    // to 1.5) costs ½·0.5 = 0.25 more: 0.23
    let test_ll = eval["test_ll"].as_f64().unwrap();
    assert!(test_ll > 0.23, "{eval}");

    // Calibration: z = (y − mean)/std. Were the predictive exact, z² would be χ² with one degree
    // of freedom: mean 1, variance 2, so over n = 500 examples the mean z² is 1 ± 3·√(2/500) =
    // 1 ± 0.19 at three deviations. τ is estimated (300 validation examples: ± 3·√(2/300) = 0.24)
    // on a grid 12% apart (± 0.06): 1 ± 0.5 in all.
    let rows = predictions(&dir, "50");
    assert_eq!(rows.len(), 500);
    let z2: f64 = rows
        .iter()
        .map(|r| {
            let (y, m, s) =
                (r["target"][0].as_f64().unwrap(), r["mean"][0].as_f64().unwrap(), r["std"][0].as_f64().unwrap());
            let (lo, hi) = (r["lower"][0].as_f64().unwrap(), r["upper"][0].as_f64().unwrap());
            assert!((m - lo - 1.959963984540054 * s).abs() < 1e-9 && (hi - m - 1.959963984540054 * s).abs() < 1e-9);
            ((y - m) / s).powi(2)
        })
        .sum::<f64>()
        / rows.len() as f64;
    assert!((0.5..1.5).contains(&z2), "mean z² {z2}");
    // each example's Monte-Carlo mixture log-likelihood: their mean is eval's test_ll (the same
    // 50 samples, the same masks), and each one is the log-density of a calibrated example
    let lls: Vec<f64> = rows.iter().map(|r| r["log_likelihood"].as_f64().unwrap()).collect();
    let mean_ll = lls.iter().sum::<f64>() / lls.len() as f64;
    assert!((mean_ll - test_ll).abs() < 1e-9, "mean {mean_ll}, eval {test_ll}");
    assert!(lls.iter().all(|l| l.is_finite()) && lls.iter().any(|&l| l != lls[0]), "{:?}", &lls[..5]);
}

#[test]
fn gaussian_nll_learns_a_variance_that_follows_the_noise() {
    let dir = data_dir("regression_gaussian", true);
    let arch = "4,dense64,relu,keep0.9,dense2";
    let report = train(&dir, &["--arch", arch, "--target-col", "y", "--loss", "gaussian-nll"]);
    assert!(report["tau"].is_null(), "{report}");
    let rows = predictions(&dir, "30");
    // the noise deviation is 0.05 + 0.4·|x1|: about 0.09 for |x1| < 0.2 and 0.41 for |x1| > 0.8
    let text = std::fs::read_to_string(dir.join("test.csv")).unwrap();
    let xs: Vec<f64> = text.lines().skip(1).map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    let mean_std = |keep: &dyn Fn(f64) -> bool| {
        let chosen: Vec<f64> =
            rows.iter().zip(&xs).filter(|(_, &x)| keep(x.abs())).map(|(r, _)| r["std"][0].as_f64().unwrap()).collect();
        chosen.iter().sum::<f64>() / chosen.len() as f64
    };
    let (calm, noisy) = (mean_std(&|a| a < 0.2), mean_std(&|a| a > 0.8));
    // the noise alone gives a ratio of 4.6, the spread of the dropout samples (the same size
    // everywhere) lowers it; a model that ignored x1 would give 1
    assert!(noisy > 2.0 * calm, "std {calm} where the noise is 0.09, {noisy} where it is 0.41");
    let eval =
        last_json(&dropnet(&dir, &["eval", "--model", "m.safetensors", "--data", "test.csv", "--mc", "30", "--json"]));
    assert!(eval["test_ll"].as_f64().unwrap().is_finite(), "{eval}");
}

#[test]
fn several_targets_give_arrays_in_their_own_units_and_the_model_keeps_their_columns() {
    let dir = data_dir("regression_two_targets", false);
    let report =
        train(&dir, &["--arch", "3,dense32,relu,dense2", "--target-col", "y,y2", "--tau", "1", "--epochs", "20"]);
    let rmse: Vec<f64> = report["test_rmse"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    // y2 = 100·x2 + 5·ε: its RMSE is in its units, near 5 and far above y's
    assert!(rmse.len() == 2 && rmse[1] > 3.0 && rmse[1] < 10.0 && rmse[0] < 1.0, "{report}");
    let bytes = std::fs::read(dir.join("m.safetensors")).unwrap();
    let h = header(&bytes);
    assert_eq!(meta(&h, "task"), serde_json::json!({"kind": "regression", "targets": ["y", "y2"]}));
    assert_eq!(meta(&h, "tau"), serde_json::json!(1.0));
    let scale = meta(&h, "target_standardization");
    assert!(scale["std"][1].as_f64().unwrap() > 50.0, "{scale}");
    let eval =
        last_json(&dropnet(&dir, &["eval", "--model", "m.safetensors", "--data", "test.csv", "--mc", "10", "--json"]));
    assert_eq!(eval["mc_rmse"].as_array().unwrap().len(), 2, "{eval}");
    assert!(eval["test_ll"].as_f64().unwrap().is_finite(), "{eval}");
    // without standardised targets the same run still reports in the original units
    let plain = train(
        &dir,
        &[
            "--arch",
            "3,dense32,relu,dense2",
            "--target-col",
            "y,y2",
            "--epochs",
            "20",
            "--standardize-targets",
            "false",
        ],
    );
    assert!(plain["test_rmse"][1].as_f64().unwrap() > 3.0, "{plain}");
    let h = header(&std::fs::read(dir.join("m.safetensors")).unwrap());
    assert!(h["__metadata__"].get("target_standardization").is_none(), "{h}");
}

#[test]
fn contradictory_or_ineffective_regression_flags_are_refused() {
    let dir = data_dir("regression_refusals", false);
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = TRAIN.to_vec();
        args.extend_from_slice(extra);
        dropnet(&dir, &args)
    };
    let a1 = ["--arch", "4,dense8,relu,dense1"];
    assert_fails(
        &run(&[&a1[..], &["--target-col", "y", "--label-col", "x1"]].concat()),
        &["--label-col and --target-col"],
    );
    assert_fails(&run(&[&a1[..], &["--tau", "2"]].concat()), &["--tau applies to regression"]);
    assert_fails(
        &run(&[&a1[..], &["--standardize-targets", "true"]].concat()),
        &["--standardize-targets applies to regression"],
    );
    assert_fails(
        &run(&[&a1[..], &["--target-col", "y", "--loss", "gaussian-nll", "--tau", "2"]].concat()),
        &["--tau has no effect with --loss gaussian-nll"],
    );
    assert_fails(&run(&[&a1[..], &["--target-col", "y", "--tau", "0"]].concat()), &["--tau '0'"]);
    assert_fails(
        &run(&[&a1[..], &["--target-col", "y", "--loss", "softmax-cross-entropy"]].concat()),
        &["regression takes mse or gaussian-nll"],
    );
    assert_fails(
        &run(&[&a1[..], &["--target-col", "y", "--loss", "gaussian-nll"]].concat()),
        &["--arch ends with 1 outputs", "need 2"],
    );
    assert_fails(
        &run(&["--arch", "3,dense8,relu,dense1", "--target-col", "y,y2"]),
        &["--arch ends with 1 outputs", "2 target(s)"],
    );
    assert_fails(&run(&[&a1[..], &["--target-col", "nope"]].concat()), &["train.csv", "no column named 'nope'"]);
    assert_fails(&run(&[&a1[..], &["--loss", "gaussian-nll"]].concat()), &["gaussian-nll needs continuous targets"]);
    let mut no_val: Vec<&str> = TRAIN.iter().copied().filter(|a| *a != "--val" && *a != "300").collect();
    no_val.extend_from_slice(&["--arch", "4,dense8,relu,dense1", "--target-col", "y", "--tau", "auto"]);
    assert_fails(&dropnet(&dir, &no_val), &["--tau auto needs --val"]);
    // a folder of IDX files has no target columns
    assert_fails(&dropnet(&dir, &["train", "--data", ".", "--target-col", "y"]), &["--target-col applies to CSV data"]);
    // a regression model evaluates CSV data with its own target columns
    train(&dir, &["--arch", "4,dense8,relu,dense1", "--target-col", "y", "--epochs", "1"]);
    let eval = |extra: &[&str]| {
        dropnet(&dir, &[&["eval", "--model", "m.safetensors", "--data", "test.csv"][..], extra].concat())
    };
    assert_fails(&eval(&["--label-col", "y"]), &["is a regression model", "no --label-col"]);
    assert_fails(&eval(&["--reliability", "r.svg"]), &["--reliability applies to classification models"]);
    let no_tau = last_json(&eval(&["--mc", "5", "--json"]));
    assert!(no_tau["test_ll"].is_null() && no_tau["tau"].is_null() && no_tau["mc_rmse"].is_number(), "{no_tau}");
}

/// A synthetic data set in the UCI layout: whitespace-separated with runs of spaces, leading
/// blanks and a trailing blank line, target in the middle column.
fn write_uci(dir: &Path, n: usize) {
    let mut g = Gen(7);
    let mut data = String::new();
    for _ in 0..n {
        let (a, b) = (2.0 * g.next() - 1.0, 2.0 * g.next() - 1.0);
        let y = 5.0 * a - 3.0 * b * b + 0.2 * g.normal();
        writeln!(data, "  {a:.5}   {y:.5} \t{b:.5}").unwrap();
    }
    data.push('\n');
    let files: [(&str, String); 6] = [
        ("data.txt", data),
        ("index_features.txt", "0\n2\n".into()),
        ("index_target.txt", "1\n".into()),
        ("n_splits.txt", "2\n".into()),
        ("n_hidden.txt", "16\n".into()),
        ("dropout_rates.txt", "0.005\n0.05".into()),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    std::fs::write(dir.join("tau_values.txt"), "5\n25\n").unwrap();
    for s in 0..2 {
        let test: Vec<usize> = (0..n).filter(|i| (i + s) % 10 == 0).collect();
        let train: Vec<usize> = (0..n).filter(|i| (i + s) % 10 != 0).collect();
        let list = |v: &[usize]| v.iter().map(|i| format!("{i}\n")).collect::<String>();
        std::fs::write(dir.join(format!("index_train_{s}.txt")), list(&train)).unwrap();
        std::fs::write(dir.join(format!("index_test_{s}.txt")), list(&test)).unwrap();
    }
}

#[test]
fn the_uci_protocol_runs_on_its_folder_layout_and_reports_per_split_and_summary() {
    let dir = temp_dir("uci_protocol");
    let set = dir.join("toyset");
    std::fs::create_dir(&set).unwrap();
    write_uci(&set, 200);
    let args = ["uci", "toyset", "--splits", "2", "--epochs", "150", "--mc", "200", "--json"];
    let out = dropnet(&dir, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = last_json(&out);
    assert_eq!((r["dataset"].as_str(), r["splits"].as_u64()), (Some("toyset"), Some(2)), "{r}");
    let per = r["per_split"].as_array().unwrap();
    assert_eq!(per.len(), 2);
    for s in per {
        assert!(
            [0.995, 0.95].contains(&s["keep"].as_f64().unwrap()) && [5.0, 25.0].contains(&s["tau"].as_f64().unwrap()),
            "{s}"
        );
        // the target's deviation is about 3.2; a network that learned nothing would score that
        assert!(s["mc_rmse"].as_f64().unwrap() < 1.5, "{s}");
    }
    // the summary is the mean and the population deviation over the splits ÷ √splits
    for key in ["mc_rmse", "test_ll", "rmse"] {
        let v: Vec<f64> = per.iter().map(|s| s[key].as_f64().unwrap()).collect();
        let mean = (v[0] + v[1]) / 2.0;
        let stderr = ((v[0] - mean).abs() * 2.0f64.sqrt() / 2.0).abs();
        assert!((r[key]["mean"].as_f64().unwrap() - mean).abs() < 1e-12, "{key}: {r}");
        assert!((r[key]["stderr"].as_f64().unwrap() - stderr).abs() < 1e-12, "{key}: {r}");
    }
    // the same run again gives the same numbers, on any thread count
    let again = last_json(&dropnet(&dir, &[&["--threads", "1"][..], &args].concat()));
    assert_eq!(again["per_split"], r["per_split"]);
}

#[test]
fn a_broken_uci_folder_is_refused_naming_the_file() {
    let dir = temp_dir("uci_broken");
    let set = dir.join("s");
    std::fs::create_dir(&set).unwrap();
    write_uci(&set, 50);
    let run = || dropnet(&dir, &["uci", "s", "--epochs", "1", "--mc", "2"]);
    std::fs::write(set.join("index_test_1.txt"), "3\n50\n").unwrap();
    assert_fails(&run(), &["index_test_1.txt", "50 is not an index below 50"]);
    // row 4 is a training row of split 1 (every row i with (i + 1) % 10 != 0 is)
    std::fs::write(set.join("index_test_1.txt"), "9\n4\n").unwrap();
    assert_fails(&run(), &["index_test_1.txt", "row 4 is also a training row"]);
    std::fs::write(set.join("index_test_1.txt"), "9\n9\n").unwrap();
    assert_fails(&run(), &["index_test_1.txt", "row 9 is listed twice"]);
    std::fs::write(set.join("index_test_1.txt"), "9\n").unwrap();
    // 16 M hidden units: every tensor is within the limits, the run is not; the error names the
    // file to change and no flag uci does not have
    std::fs::write(set.join("n_hidden.txt"), "16777216\n").unwrap();
    if dropnet::memory::available().is_some() {
        let out = run();
        assert_fails(&out, &["n_hidden.txt", "16777216 hidden units", "available"]);
        assert!(!stderr(&out).contains("--batch"), "{}", stderr(&out));
    } else {
        eprintln!("this system does not say how much memory it has: the memory refusal is not tested here");
    }
    std::fs::write(set.join("n_hidden.txt"), "16\n").unwrap();
    std::fs::write(set.join("index_test_1.txt"), "3\n").unwrap();
    std::fs::write(set.join("data.txt"), "1 2 3\n4 5\n").unwrap();
    assert_fails(&run(), &["data.txt", "example 1 has 2 numbers"]);
    std::fs::write(set.join("data.txt"), "1 2 x\n").unwrap();
    assert_fails(&run(), &["data.txt", "line 1: 'x' is not a finite number"]);
    std::fs::remove_file(set.join("data.txt")).unwrap();
    assert_fails(&run(), &["data.txt"]);
    assert_fails(&dropnet(&dir, &["uci", "s", "--splits", "0"]), &["--splits 0"]);
}

#[test]
fn a_resumed_regression_run_continues_bit_for_bit() {
    let dir = data_dir("regression_resume", false);
    let arch = ["--arch", "4,dense16,relu,keep0.9,dense1", "--target-col", "y", "--tau", "auto"];
    let straight = train(&dir, &[&arch[..], &["--epochs", "6"]].concat());
    train(&dir, &[&arch[..], &["--epochs", "3"]].concat());
    let out = dropnet(&dir, &["train", "--resume", "m.safetensors", "--epochs", "6", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let resumed = last_json(&out);
    for key in ["test_rmse", "val_rmse", "tau", "train_loss"] {
        assert_eq!(resumed[key], straight[key], "{key}: {resumed} against {straight}");
    }
}
