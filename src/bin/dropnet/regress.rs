//! `dropnet eval` and `dropnet predict` on a regression model: RMSE in evaluation mode and of the
//! Monte-Carlo mean, the test log-likelihood, and per example the predictive mean, deviation and
//! a 95% interval. Every figure is in the targets' original units.

use dropnet::data::Dataset;
use dropnet::error::{Error, Result};
use dropnet::model_file::{Regression, Saved};
use dropnet::regression::{predictive, rmse, Outputs};
use dropnet::train::PerTarget;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

/// The z of a two-sided 95% interval of a normal distribution.
const Z_95: f64 = 1.959_963_984_540_054;

/// The precisions the log-likelihood is computed for: the model's τ (none: no log-likelihood of
/// a homoscedastic model).
fn taus(r: &Regression) -> Vec<f64> {
    r.tau.into_iter().collect()
}

/// `eval` of `saved`, whose regression targets are `r`.
pub fn eval(saved: &mut Saved, r: &Regression, set: &Dataset, mc: Option<u32>, json: bool) -> Result<ExitCode> {
    let outputs = Outputs::of(&saved.net, saved.loss, r.target_standardization.as_ref())?;
    let y = set.values()?;
    let eval_rmse = rmse(&mut saved.net, set, outputs)?;
    let heteroscedastic = outputs.loss.outputs_per_target() == 2;
    let mc_scores = match mc {
        Some(t) => {
            let taus = taus(r);
            let with_ll = heteroscedastic || !taus.is_empty();
            let p = predictive(&mut saved.net, &set.x, with_ll.then_some(y), outputs, Some(t), &taus)?;
            Some((t, p.rmse(y), p.log_likelihood.first().copied()))
        }
        None => None,
    };
    if json {
        let mut report = serde_json::json!({ "rmse": PerTarget::json(&eval_rmse), "n": set.len(), "tau": r.tau });
        if let Some((t, mc_rmse, test_ll)) = &mc_scores {
            report["mc_samples"] = serde_json::json!(t);
            report["mc_rmse"] = PerTarget::json(mc_rmse);
            report["test_ll"] = serde_json::json!(test_ll);
        }
        println!("{report}");
        return Ok(ExitCode::SUCCESS);
    }
    let list = |v: &[f64]| v.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(", ");
    println!("RMSE {}  on {} examples ({})", list(&eval_rmse), set.len(), r.targets.join(", "));
    if let Some((t, mc_rmse, test_ll)) = &mc_scores {
        let ll = match test_ll {
            Some(ll) => format!("test log-likelihood {ll:.4}"),
            None => "no test log-likelihood: the model has no τ (train with --tau T or --tau auto)".to_string(),
        };
        println!("Monte-Carlo dropout ({t} samples): RMSE {}  {ll}", list(mc_rmse));
    }
    Ok(ExitCode::SUCCESS)
}

/// `predict` of `saved`, whose regression targets are `r`.
pub fn predict(saved: &mut Saved, r: &Regression, set: &Dataset, mc: Option<u32>, json: bool) -> Result<ExitCode> {
    let outputs = Outputs::of(&saved.net, saved.loss, r.target_standardization.as_ref())?;
    let y = set.values()?;
    let started = Instant::now();
    // with a τ (or a predicted variance) each example's log-likelihood comes too
    let taus = taus(r);
    let with_ll = outputs.heteroscedastic() || !taus.is_empty();
    let p = predictive(&mut saved.net, &set.x, with_ll.then_some(y), outputs, mc, &taus)?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let write_error = |e: std::io::Error| Error::Config(format!("cannot write to stdout: {e}"));
    let d = outputs.targets;
    for i in 0..set.len() {
        let mean = &p.mean[i * d..(i + 1) * d];
        let std: Vec<f64> = (0..d).map(|k| p.std(i, k, r.tau)).collect();
        if json {
            let line = serde_json::json!({
                "index": i,
                "mean": mean,
                "std": std,
                "lower": mean.iter().zip(&std).map(|(m, s)| m - Z_95 * s).collect::<Vec<_>>(),
                "upper": mean.iter().zip(&std).map(|(m, s)| m + Z_95 * s).collect::<Vec<_>>(),
                "target": y.row(i),
                "log_likelihood": p.example_log_likelihood.get(i),
            });
            writeln!(out, "{line}").map_err(write_error)?;
        } else {
            let cells: Vec<String> =
                (0..d).map(|k| format!("{:.4} ± {:.4} (target {:.4})", mean[k], Z_95 * std[k], y.get(i, k))).collect();
            writeln!(out, "{i:>6}  {}", cells.join("  ")).map_err(write_error)?;
        }
    }
    let rmse = p.rmse(y);
    let rate = set.len() as f64 / seconds.max(1e-9);
    if json {
        let summary = serde_json::json!({
            "summary": true, "examples": set.len(), "mc_samples": mc, "rmse": PerTarget::json(&rmse),
            "tau": r.tau, "test_ll": p.log_likelihood.first(), "seconds": seconds, "examples_per_s": rate,
        });
        writeln!(out, "{summary}").map_err(write_error)?;
    } else {
        let list: Vec<String> = rmse.iter().map(|v| format!("{v:.4}")).collect();
        writeln!(
            out,
            "{} examples, RMSE {}, {rate:.0} examples/s (intervals: mean ± 1.96 std)",
            set.len(),
            list.join(", ")
        )
        .map_err(write_error)?;
    }
    out.flush().map_err(write_error)?;
    Ok(ExitCode::SUCCESS)
}
