//! Training options, as `dropnet train` flags and as TOML recipes (`--recipe FILE`); a flag given
//! on the command line overrides the recipe's value. A recipe key that is not an option is an error.

use crate::activation::Activation;
use crate::dropout::Scaling;
use crate::error::{file_error, io_error, Error, Result};
use crate::loss::Loss;
use crate::optim::{LrSchedule, Method, OptimConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Every option of `dropnet train`. `None` means "not given" (then the recipe's value, then the
/// default applies).
#[derive(Clone, Debug, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrainOptions {
    /// Data: a folder of IDX files (MNIST family) or a CSV file [default: $DROPNET_DATA, ./data/mnist,
    /// ./data/fashion-mnist, /usr/share/datasets/fashion-mnist]
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Test set CSV file (with a CSV --data)
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Label column of CSV data: index from 0, or a header name [default: 0]
    #[arg(long)]
    pub label_col: Option<String>,
    /// Standardise every feature with the training set's mean and standard deviation
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub standardize: Option<bool>,
    /// Units per layer, input first [default: 784-1024-1024-10]
    #[arg(long)]
    pub arch: Option<String>,
    /// Keep probability of each dense layer's input, input layer first [default: 0.8,0.5,0.5]
    #[arg(long, value_delimiter = ',')]
    pub keep: Option<Vec<f64>>,
    /// JSON array with one entry per dense layer: a keep probability or an array of one per unit
    #[arg(long)]
    pub keep_file: Option<PathBuf>,
    /// Dropout convention: inverted or standard [default: inverted]
    #[arg(long)]
    pub scaling: Option<Scaling>,
    /// Hidden activation [default: relu]
    #[arg(long)]
    pub activation: Option<Activation>,
    /// Loss: softmax-cross-entropy, mse or bce-with-logits (on one-hot labels) [default: softmax-cross-entropy]
    #[arg(long)]
    pub loss: Option<Loss>,
    /// Weight init: he, glorot, or a standard deviation σ for N(0, σ²) [default: he for the ReLU family]
    #[arg(long)]
    pub init: Option<String>,
    /// Validation examples held out of the training set (seeded; 0 = none) [default: 0]
    #[arg(long)]
    pub val: Option<usize>,
    /// Epochs to train (the total, when resuming) [default: 10]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples per mini-batch [default: 128]
    #[arg(long)]
    pub batch: Option<usize>,
    /// Optimizer [default: sgd]
    #[arg(long, value_enum)]
    pub optimizer: Option<Method>,
    /// Learning rate η0 [default: 0.01]
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning-rate schedule: constant, exp:GAMMA, inv:DECAY or step:EVERY:GAMMA [default: constant]
    #[arg(long)]
    pub lr_schedule: Option<String>,
    /// Momentum μ (sgd, nesterov); with --momentum-start, the value the ramp ends at [default: 0.9]
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Momentum at epoch 0 of a linear ramp to --momentum
    #[arg(long)]
    pub momentum_start: Option<f64>,
    /// Epochs of the momentum ramp
    #[arg(long)]
    pub momentum_ramp_epochs: Option<usize>,
    /// Step with lr·(1−momentum), as Hinton et al. 2012
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub scale_lr_by_momentum: Option<bool>,
    /// L2 weight decay λ on weights [default: 0]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Max-norm c: each unit's incoming weight vector is kept at length ≤ c
    #[arg(long)]
    pub max_norm: Option<f64>,
    /// Stop when the validation error has not improved for this many epochs (needs --val)
    #[arg(long)]
    pub patience: Option<usize>,
    /// Seed of masks, init, shuffling and the validation split [default: 20260522]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Model file to write (safetensors) [default: model.safetensors]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the model every K epochs (to --out), so that --resume can continue from it
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Append one JSON object per epoch to this file
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Plot the training curves to this SVG file
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// The seed used when none is given (printed, so that a run can be repeated).
pub const DEFAULT_SEED: u64 = 20260522;

macro_rules! overlay {
    ($base:ident, $over:ident; $($field:ident),*) => {
        TrainOptions { $($field: $over.$field.or($base.$field)),* }
    };
}

impl TrainOptions {
    /// Read a TOML recipe.
    pub fn from_recipe(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        toml::from_str(&text).map_err(|e| file_error(path, format!("bad recipe: {}", e.message())))
    }

    /// `self` with every option that `over` gives replaced by `over`'s value.
    pub fn overlay(self, over: TrainOptions) -> TrainOptions {
        let base = self;
        overlay!(base, over; data, test_data, label_col, standardize, arch, keep, keep_file, scaling, activation,
            loss, init, val, epochs, batch, optimizer, lr, lr_schedule, momentum, momentum_start,
            momentum_ramp_epochs, scale_lr_by_momentum, weight_decay, max_norm, patience, seed, out,
            checkpoint_every, log, plot)
    }

    /// Layer sizes from `--arch` ("784-1024-1024-10").
    pub fn sizes(&self) -> Result<Vec<usize>> {
        let text = self.arch.as_deref().unwrap_or("784-1024-1024-10");
        text.split('-')
            .map(|s| s.trim().parse::<usize>().ok().filter(|&n| n > 0))
            .collect::<Option<Vec<_>>>()
            .filter(|v| v.len() >= 2)
            .ok_or_else(|| Error::Config(format!("--arch '{text}' is not a list of unit counts like 784-1024-10")))
    }

    /// The optimizer settings these options describe.
    pub fn optim_config(&self) -> Result<OptimConfig> {
        let d = OptimConfig::default();
        let config = OptimConfig {
            method: self.optimizer.unwrap_or(d.method),
            lr: self.lr.unwrap_or(d.lr),
            lr_schedule: parse_schedule(self.lr_schedule.as_deref().unwrap_or("constant"))?,
            momentum: self.momentum.unwrap_or(d.momentum),
            momentum_start: self.momentum_start,
            momentum_ramp_epochs: self.momentum_ramp_epochs.unwrap_or(0),
            scale_lr_by_momentum: self.scale_lr_by_momentum.unwrap_or(false),
            weight_decay: self.weight_decay.unwrap_or(0.0),
            max_norm: self.max_norm,
            ..d
        };
        config.validate()?;
        Ok(config)
    }
}

/// `constant`, `exp:GAMMA`, `inv:DECAY`, `step:EVERY:GAMMA`.
pub fn parse_schedule(text: &str) -> Result<LrSchedule> {
    let parts: Vec<&str> = text.split(':').collect();
    let num = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
    let schedule = match parts.as_slice() {
        ["constant"] => Some(LrSchedule::Constant),
        ["exp", g] => num(g).map(|gamma| LrSchedule::Exponential { gamma }),
        ["inv", d] => num(d).map(|decay| LrSchedule::InverseT { decay }),
        ["step", e, g] => e.parse().ok().zip(num(g)).map(|(every, gamma)| LrSchedule::Step { every, gamma }),
        _ => None,
    };
    schedule.ok_or_else(|| {
        Error::Config(format!("--lr-schedule '{text}': expected constant, exp:GAMMA, inv:DECAY or step:EVERY:GAMMA"))
    })
}

/// Keep probabilities per dense layer from a JSON file: each entry a number (the whole layer) or an
/// array (one per unit).
pub fn read_keep_file(path: &Path, sizes: &[usize]) -> Result<Vec<Vec<f64>>> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| file_error(path, format!("not valid JSON ({e})")))?;
    let entries =
        value.as_array().ok_or_else(|| file_error(path, "expected a JSON array, one entry per dense layer"))?;
    if entries.len() != sizes.len() - 1 {
        return Err(file_error(path, format!("{} entries for {} dense layers", entries.len(), sizes.len() - 1)));
    }
    entries
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(l, (entry, &units))| match entry {
            serde_json::Value::Number(n) => Ok(vec![n.as_f64().unwrap_or(f64::NAN); units]),
            serde_json::Value::Array(values) if values.len() == units => values
                .iter()
                .map(|v| v.as_f64().ok_or_else(|| file_error(path, format!("layer {l}: {v} is not a number"))))
                .collect(),
            serde_json::Value::Array(values) => {
                Err(file_error(path, format!("layer {l} has {units} input units but {} keep values", values.len())))
            }
            other => Err(file_error(path, format!("layer {l}: {other} is neither a number nor an array"))),
        })
        .collect()
}
