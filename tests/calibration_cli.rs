//! `dropnet eval`'s calibration scores, reliability diagram and out-of-distribution AUROC, on the
//! toy data of `common`.

mod common;
use common::*;

fn trained(name: &str) -> std::path::PathBuf {
    let dir = toy_dir(name);
    let out = dropnet(&dir, &toy_args(&["--epochs", "5", "--out", "m.safetensors"]));
    assert!(out.status.success(), "{}", stderr(&out));
    dir
}

#[test]
fn eval_reports_nll_brier_and_ece_in_evaluation_mode_and_for_the_mc_mean() {
    let dir = trained("calibration_fields");
    let report =
        last_json(&dropnet(&dir, &["eval", "--model", "m.safetensors", "--data", "toy", "--mc", "20", "--json"]));
    // the NLL of the evaluation-mode probabilities is the cross-entropy loss, computed here by
    // another path (softmax probabilities, then their logarithm): equal to f32 rounding
    let (nll, loss) = (report["nll"].as_f64().unwrap(), report["loss"].as_f64().unwrap());
    assert!((nll - loss).abs() < 1e-5 * loss.max(1.0), "{report}");
    for key in ["brier", "mc_brier"] {
        let v = report[key].as_f64().unwrap();
        assert!((0.0..=2.0).contains(&v), "{key}: {report}");
    }
    for key in ["ece", "mc_ece"] {
        let v = report[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key}: {report}");
    }
    assert!(report["mc_nll"].as_f64().unwrap() > 0.0, "{report}");
    // without --mc, no MC fields
    let plain = last_json(&dropnet(&dir, &["eval", "--model", "m.safetensors", "--data", "toy", "--json"]));
    assert!(plain.get("mc_ece").is_none() && plain["ece"] == report["ece"], "{plain}");
}

#[test]
fn the_ood_auroc_of_a_data_set_against_itself_is_one_half() {
    // the same examples draw the same masks (addressed by example and sample), so both sides have
    // the same scores and every pair is a tie
    let dir = trained("calibration_ood_self");
    let args = ["eval", "--model", "m.safetensors", "--data", "toy", "--mc", "10", "--ood-data", "toy", "--json"];
    let report = last_json(&dropnet(&dir, &args));
    assert_eq!(report["ood_auroc_entropy"], 0.5, "{report}");
    assert_eq!(report["ood_auroc_mi"], 0.5, "{report}");
    assert_eq!(report["ood_n"], 90, "{report}");
}

#[test]
fn ood_data_without_mc_is_an_error_and_the_reliability_diagram_is_an_svg() {
    let dir = trained("calibration_flags");
    let out = dropnet(&dir, &["eval", "--model", "m.safetensors", "--data", "toy", "--ood-data", "toy"]);
    assert_fails(&out, &["--ood-data needs --mc"]);
    let out = dropnet(&dir, &["eval", "--model", "m.safetensors", "--data", "toy", "--reliability", "m.safetensors"]);
    assert_fails(&out, &["--reliability", "never writes over an input"]);
    let out =
        dropnet(&dir, &["eval", "--model", "m.safetensors", "--data", "toy", "--mc", "5", "--reliability", "r.svg"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let svg = std::fs::read_to_string(dir.join("r.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Monte-Carlo mean"), "{}", &svg[..svg.len().min(200)]);
}
