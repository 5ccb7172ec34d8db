//! `dropnet info` (what a model file holds) and `dropnet gradcheck` (backward against finite
//! differences).

use dropnet::dropout::KeepSummary;
use dropnet::error::Result;
use dropnet::gradcheck::{self, CaseResult, TOLERANCE};
use dropnet::layer::{PlanKind, PoolKind};
use dropnet::model_file;
use std::path::Path;
use std::process::ExitCode;

pub fn run_info(model: &Path, json: bool) -> Result<ExitCode> {
    let saved = model_file::load(model)?;
    let state = saved.training.as_ref();
    if json {
        let net = &saved.net;
        let layers: Vec<_> = net
            .plans()
            .iter()
            .zip(net.layers())
            .map(|(p, l)| {
                let kind = match &p.kind {
                    PlanKind::Dense { .. } => "dense",
                    PlanKind::Conv(_) => "conv",
                    PlanKind::Pool { kind: PoolKind::Max, .. } => "maxpool",
                    PlanKind::Pool { kind: PoolKind::Avg, .. } => "avgpool",
                    PlanKind::Activation => "activation",
                    PlanKind::Noise => "noise",
                };
                let tokens: Vec<String> = net.stack().tokens[p.modules.clone()].iter().map(|t| t.text()).collect();
                serde_json::json!({
                    "kind": kind,
                    "tokens": tokens.join(","),
                    "modules": [p.modules.start, p.modules.end - 1],
                    "inputs": p.input.units(),
                    "outputs": p.output.units(),
                    "output_shape": p.output.dims(),
                    "activation": p.activation.name(),
                    "keep": l.noise().map(|n| n.keep().values().to_vec()),
                    "params": p.params(),
                })
            })
            .collect();
        let report = serde_json::json!({
            "arch": net.stack().text(),
            "input_shape": net.input_shape().dims(),
            "layers": layers,
            "params": net.param_count(),
            "scaling": net.noises().first().map(|n| n.scaling().to_string()),
            "seed": net.seed(),
            "loss": saved.loss.name(),
            "task": if saved.regression.is_some() { "regression" } else { "classification" },
            "targets": saved.regression.as_ref().map(|r| &r.targets),
            "tau": saved.regression.as_ref().and_then(|r| r.tau),
            "epochs_done": state.map(|s| s.epochs_done),
            "history": state.map(|s| &s.history),
            "learned_keep": net.learned_keep().iter().map(|(layer, keep)| {
                let k = KeepSummary::of(*layer, keep);
                serde_json::json!({"layer": layer, "mean": k.mean, "min": k.min, "max": k.max, "keep": keep})
            }).collect::<Vec<_>>(),
        });
        println!("{report}");
    } else {
        println!("{}", saved.net);
        println!("loss: {}", saved.loss);
        if let Some(r) = &saved.regression {
            let tau = r.tau.map_or("none".to_string(), |t| t.to_string());
            println!("regression of {} (τ {tau})", r.targets.join(", "));
        }
        if let Some(s) = state {
            println!("trained {} epochs ({} steps, batch {})", s.epochs_done, s.step, s.batch);
            if let Some(p) = &s.partial_epoch {
                println!("interrupted in epoch {}, after step {} of it", s.epochs_done + 1, p.steps_done);
            }
            if let Some(r) = s.history.last() {
                let pct = |e: Option<f64>| e.map_or("-".to_string(), |e| format!("{:.2}%", 100.0 * e));
                let rmse = |e: &Option<dropnet::train::PerTarget>| {
                    e.as_ref().map_or("-".to_string(), |e| format!("{:?}", e.0))
                };
                match r.train_error {
                    Some(_) => {
                        println!("last epoch: test error {}, validation error {}", pct(r.test_error), pct(r.val_error))
                    }
                    None => {
                        println!("last epoch: test RMSE {}, validation RMSE {}", rmse(&r.test_rmse), rmse(&r.val_rmse))
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_gradcheck(json: bool, seed: u64) -> Result<ExitCode> {
    let results = gradcheck::run_all(seed)?;
    let worst = results.iter().map(|r| r.max_rel_error).fold(0.0, f64::max);
    let passed = results.iter().all(CaseResult::passed);
    if json {
        let cases: Vec<_> = results
            .iter()
            .map(|r| {
                let tensors: serde_json::Map<String, serde_json::Value> =
                    r.tensors.iter().map(|(name, err)| (name.clone(), serde_json::json!(err))).collect();
                serde_json::json!({
                    "name": r.name, "max_rel_error": r.max_rel_error, "passed": r.passed(),
                    "seed": r.seed, "tensors": tensors,
                })
            })
            .collect();
        let report = serde_json::json!({
            "max_rel_error": worst, "tolerance": TOLERANCE, "passed": passed, "cases": cases,
        });
        println!("{report}");
    } else {
        println!("{:<46} {:>14}  result", "case", "max rel error");
        for r in &results {
            println!("{:<46} {:>14.3e}  {}", r.name, r.max_rel_error, if r.passed() { "ok" } else { "FAILED" });
        }
        let verdict = if passed { "all passed" } else { "FAILED" };
        println!("{} cases, worst relative error {worst:.3e} (tolerance {TOLERANCE:e}): {verdict}", results.len());
    }
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
