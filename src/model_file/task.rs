//! The `task` metadata of a model file and, for regression, the keys that come with it:
//! `target_standardization` (the targets' training-set mean and deviation) and `tau` (the
//! observation precision in the targets' original units).

use crate::data::Standardization;
use crate::limits::MAX_LAYER_UNITS;
use crate::loss::Loss;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the model's outputs mean (the `task` metadata key).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Task {
    #[default]
    Classification,
    /// Continuous targets, named by their CSV columns (header names, or indices without a header).
    Regression { targets: Vec<String> },
}

/// A regression model's targets, their scaling and observation precision.
#[derive(Clone, Debug, PartialEq)]
pub struct Regression {
    pub targets: Vec<String>,
    pub target_standardization: Option<Standardization>,
    /// τ, homoscedastic models only; `None` when training was given none.
    pub tau: Option<f64>,
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

/// The metadata entries of `regression` (classification without one).
pub fn write(metadata: &mut BTreeMap<String, String>, regression: Option<&Regression>) {
    let Some(r) = regression else {
        metadata.insert("task".to_string(), json(&Task::Classification));
        return;
    };
    metadata.insert("task".to_string(), json(&Task::Regression { targets: r.targets.clone() }));
    if let Some(s) = &r.target_standardization {
        metadata.insert("target_standardization".to_string(), json(s));
    }
    if let Some(tau) = r.tau {
        metadata.insert("tau".to_string(), json(&tau));
    }
}

/// Read and check the task entries against the network's `outputs` and `loss`.
pub fn read(
    metadata: &BTreeMap<String, String>,
    outputs: usize,
    loss: Loss,
) -> std::result::Result<Option<Regression>, String> {
    let task: Task = match metadata.get("task") {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("metadata 'task' is invalid ({e})"))?,
        None => Task::Classification,
    };
    let extra = ["target_standardization", "tau"].into_iter().find(|k| metadata.contains_key(*k));
    let targets = match task {
        Task::Classification => {
            if let Some(key) = extra {
                return Err(format!("metadata '{key}' belongs to a regression model, but the task is classification"));
            }
            if !loss.takes_labels() {
                return Err(format!("loss {loss} needs continuous targets, but the task is classification"));
            }
            return Ok(None);
        }
        Task::Regression { targets } => targets,
    };
    if targets.is_empty() || targets.len() > MAX_LAYER_UNITS {
        return Err(format!("a regression task needs 1 to {MAX_LAYER_UNITS} targets, not {}", targets.len()));
    }
    if !loss.is_regression() {
        return Err(format!("loss {loss} is not a regression loss (mse or gaussian-nll)"));
    }
    if outputs != targets.len() * loss.outputs_per_target() {
        return Err(format!("{} targets with loss {loss}, but the network has {outputs} outputs", targets.len()));
    }
    let target_standardization = match metadata.get("target_standardization") {
        Some(text) => {
            let s: Standardization = serde_json::from_str(text)
                .map_err(|e| format!("metadata 'target_standardization' is invalid ({e})"))?;
            s.validate(targets.len()).map_err(|e| format!("metadata 'target_standardization': {e}"))?;
            Some(s)
        }
        None => None,
    };
    let tau = match metadata.get("tau") {
        Some(text) => match serde_json::from_str::<f64>(text) {
            Ok(t) if t > 0.0 && t.is_finite() && loss == Loss::MeanSquaredError => Some(t),
            Ok(_) if loss == Loss::GaussianNll => return Err("metadata 'tau' with loss gaussian-nll".into()),
            _ => return Err(format!("metadata 'tau' is {text}: it must be a positive, finite number")),
        },
        None => None,
    };
    Ok(Some(Regression { targets, target_standardization, tau }))
}
