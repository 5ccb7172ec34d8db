//! Training options, as `dropnet train` flags and as TOML recipes (`--recipe FILE`): their
//! defaults, the rules that refuse contradictory or ineffective combinations, and the networks,
//! optimizers and states they describe.
//!
//! A flag given on the command line overrides the recipe's value (`--keep` and `--keep-file`
//! replace each other). A recipe key that is not an option is an error. Messages name an option
//! as the user gave it: `--keep`, or `keep (in recipes/x.toml)`.

use dropnet::activation::Activation;
use dropnet::data::csv::Header;
use dropnet::dropout::{ConcretePrior, Scaling};
use dropnet::error::{file_error, shorten, Error, Result, QUOTE_CHARS};
use dropnet::files::read_text_bounded;
use dropnet::limits::MAX_TEXT_FILE_BYTES;
use dropnet::loss::Loss;
use dropnet::network::{Architecture, Init, Network};
use dropnet::optim::{AdamForm, Method, OptimConfig};
use dropnet::stack::{ConcreteSpec, NoiseKind, Stack};
use dropnet::train::TrainState;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[path = "keep_file.rs"]
mod keep_file;
#[path = "options_mlp.rs"]
mod mlp;
#[allow(unused_imports)]
pub use keep_file::{parse_keep_file, read_keep_file};

/// Every default of `dropnet train`, in one place.
pub mod defaults {
    pub const ARCH: &str = "784-1024-1024-10";
    /// Keep probability of the network's input, and of every hidden layer's output.
    pub const KEEP_INPUT: f64 = 0.8;
    pub const KEEP_HIDDEN: f64 = 0.5;
    pub const EPOCHS: usize = 10;
    pub const BATCH: usize = 128;
    pub const VAL: usize = 0;
    pub const OUT: &str = "model.safetensors";
    /// The seed used when none is given (printed, so that a run can be repeated).
    pub const SEED: u64 = 20260522;
}

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
    /// Whether the first line of CSV data is a header: auto (when a field is not a number), yes
    /// (also a header of numbers, as pandas writes 0,1,2) or no [default: auto]
    #[arg(long, value_enum)]
    pub header: Option<Header>,
    /// Regression: the target columns of CSV data (indices from 0 or header names, comma-separated);
    /// every other column is a feature
    #[arg(long, value_delimiter = ',')]
    pub target_col: Option<Vec<String>>,
    /// Regression: standardise the targets with the training set's mean and deviation (figures
    /// and predictions stay in the original units) [default: true]
    #[arg(long)]
    pub standardize_targets: Option<bool>,
    /// Regression with mse: the observation precision τ (original units), or auto (needs --val):
    /// the τ that maximises the validation set's Monte-Carlo log-likelihood
    #[arg(long)]
    pub tau: Option<String>,
    /// Standardise every feature with the training set's mean and standard deviation
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub standardize: Option<bool>,
    /// The network, input first: units per layer (784-1024-1024-10, with --keep and --activation)
    /// or comma-separated tokens: 784 or 1x28x28, then denseN, convCkK[sS][pP], maxpoolK[sS],
    /// avgpoolK[sS], flatten, an activation (relu, leakyrelu, tanh, sigmoid, softmax, elu, selu,
    /// gelu), a noise on the next module's input: keepP, spatialP, gaussianP, alphaP, dropconnectP
    /// or concreteP (keep learned from P) [default: 784-1024-1024-10]
    #[arg(long)]
    pub arch: Option<String>,
    /// Keep probability of each dense layer's input, input layer first, for the units-per-layer
    /// form of --arch [default: 0.8,0.5,0.5]
    #[arg(long, value_delimiter = ',')]
    pub keep: Option<Vec<f64>>,
    /// JSON array with one entry per noise token (per dense layer in the units-per-layer form): a
    /// keep probability, or an array of one per unit or per channel
    #[arg(long)]
    pub keep_file: Option<PathBuf>,
    /// Dropout convention of every Bernoulli noise: inverted or standard [default: inverted]
    #[arg(long)]
    pub scaling: Option<Scaling>,
    /// Concrete dropout: temperature t of the relaxed Bernoulli σ((θ + L)/t) [default: 0.1]
    #[arg(long)]
    pub concrete_temperature: Option<f64>,
    /// Concrete dropout: learn a keep per unit (per channel of a map) or one per layer [default: unit]
    #[arg(long, value_enum)]
    pub concrete_per: Option<ConcretePer>,
    /// Concrete dropout: the prior length-scale l of the regulariser's weight term (l²/N)·‖W‖²/keep
    /// [default: 0.01]
    #[arg(long)]
    pub lengthscale: Option<f64>,
    /// Hidden activation, for the units-per-layer form of --arch [default: relu]
    #[arg(long)]
    pub activation: Option<Activation>,
    /// Loss: softmax-cross-entropy, mse or bce-with-logits (on one-hot labels); for regression mse or
    /// gaussian-nll [default: softmax-cross-entropy; mse with --target-col]
    #[arg(long)]
    pub loss: Option<Loss>,
    /// Weight init: he, glorot, glorot-uniform, lecun, or a standard deviation σ for N(0, σ²)
    /// [default: lecun for selu, he for the rest of the ReLU family, glorot otherwise]
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
    /// Adam's ε [default: 1e-8]
    #[arg(long)]
    pub adam_epsilon: Option<f64>,
    /// Where Adam adds ε: textbook (to the bias-corrected √ŝ, as PyTorch) or keras (to √s, the
    /// corrections folded into the step size, as Keras and TensorFlow) [default: textbook]
    #[arg(long, value_enum)]
    pub adam_form: Option<AdamForm>,
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

/// Calls `$m!($($args)*; field, field, ...)` with every field of [`TrainOptions`], so that the
/// list is written once (a test checks it against the flags clap knows).
macro_rules! with_option_fields {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)*; data, test_data, label_col, header, target_col, standardize_targets, tau, standardize, arch, keep, keep_file, scaling,
            concrete_temperature, concrete_per, lengthscale, activation,
            loss, init, val, epochs, batch, optimizer, lr, lr_schedule, adam_epsilon, adam_form, momentum, momentum_start,
            momentum_ramp_epochs, scale_lr_by_momentum, weight_decay, max_norm, patience, seed, out,
            checkpoint_every, log, plot)
    };
}

macro_rules! overlay_fields {
    ($base:ident, $over:ident; $($field:ident),*) => {
        TrainOptions { $($field: $over.$field.or($base.$field)),* }
    };
}

macro_rules! given_fields {
    ($options:ident; $($field:ident),*) => {{
        let mut given: Vec<&'static str> = Vec::new();
        $(if $options.$field.is_some() { given.push(stringify!($field)); })*
        given
    }};
}

/// The options `dropnet train --resume` accepts besides `--json` and `--threads`: how long to go
/// on and where to write. Everything else is defined by the model file.
pub const RESUME_OPTIONS: [&str; 6] = ["epochs", "patience", "checkpoint_every", "out", "log", "plot"];

/// `--lr-schedule` for the field `lr_schedule`.
pub fn flag_of(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

impl TrainOptions {
    /// Read a TOML recipe (a regular file of at most [`MAX_TEXT_FILE_BYTES`]).
    pub fn from_recipe(path: &Path) -> Result<Self> {
        Self::from_toml(&read_text_bounded(path, MAX_TEXT_FILE_BYTES)?, path)
    }

    /// Parse the text of a TOML recipe; `origin` names it in messages.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| file_error(origin, format!("bad recipe: {}", e.message())))
    }

    /// `self` with every option that `over` gives replaced by `over`'s value. `keep` and
    /// `keep_file` say the same thing: when `over` gives either, `self`'s two are dropped.
    pub fn overlay(self, over: TrainOptions) -> TrainOptions {
        let mut base = self;
        if over.keep.is_some() || over.keep_file.is_some() {
            (base.keep, base.keep_file) = (None, None);
        }
        with_option_fields!(overlay_fields!(base, over))
    }

    /// The fields these options give (not `None`), in declaration order.
    pub fn given(&self) -> Vec<&'static str> {
        let options = self;
        with_option_fields!(given_fields!(options))
    }
}

/// What a concrete dropout token learns: a keep probability per unit, or one for its layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ConcretePer {
    Unit,
    Layer,
}

/// The observation precision of a homoscedastic regression model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tau {
    /// τ in the targets' original units.
    Given(f64),
    /// Chosen on the validation set after training (`dropnet::regression::choose_tau`).
    Auto,
}

/// Options of one run with where each came from: the command line, or a recipe.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub values: TrainOptions,
    recipe: Option<PathBuf>,
    from_recipe: Vec<&'static str>,
}

impl Options {
    /// The command line's options over the recipe's (when there is one).
    pub fn new(command_line: TrainOptions, recipe: Option<&Path>) -> Result<Self> {
        let Some(path) = recipe else {
            return Ok(Self { values: command_line, recipe: None, from_recipe: Vec::new() });
        };
        let from_file = TrainOptions::from_recipe(path)?;
        let values = from_file.overlay(command_line.clone());
        let given = command_line.given();
        let from_recipe = values.given().into_iter().filter(|f| !given.contains(f)).collect();
        Ok(Self { values, recipe: Some(path.to_path_buf()), from_recipe })
    }

    /// Options given directly (all taken as command-line flags): for the recipe fuzz target and
    /// the tests, which include this file.
    #[allow(dead_code)]
    pub fn from_values(values: TrainOptions) -> Self {
        Self { values, recipe: None, from_recipe: Vec::new() }
    }

    /// How the user gave option `field`: `--keep`, or `keep (in r.toml)`.
    pub fn name(&self, field: &str) -> String {
        match &self.recipe {
            Some(recipe) if self.from_recipe.contains(&field) => {
                format!("{} (in {})", field.replace('_', "-"), recipe.display())
            }
            _ => flag_of(field),
        }
    }

    fn error(&self, field: &str, message: impl std::fmt::Display) -> Error {
        Error::Config(format!("{} {message}", self.name(field)))
    }

    /// Refuse options that contradict each other or would have no effect (a new run).
    pub fn check_new_run(&self) -> Result<()> {
        let v = &self.values;
        if v.keep.is_some() && v.keep_file.is_some() {
            return Err(Error::Config(format!(
                "{} and {} both set the keep probabilities: give one",
                self.name("keep"),
                self.name("keep_file")
            )));
        }
        if v.patience.is_some() && v.val.unwrap_or(defaults::VAL) == 0 {
            return Err(self.error("patience", "needs --val N: early stopping watches the validation error"));
        }
        if v.patience == Some(0) {
            return Err(self.error("patience", "must be at least 1"));
        }
        self.check_regression()?;
        if v.checkpoint_every == Some(0) {
            return Err(self.error("checkpoint_every", "must be at least 1"));
        }
        if v.epochs == Some(0) {
            return Err(self.error("epochs", "is 0: the run would train nothing"));
        }
        let method = v.optimizer.unwrap_or(OptimConfig::default().method);
        if !matches!(method, Method::Sgd | Method::Nesterov) {
            let given = v.given();
            let momentum = ["momentum", "momentum_start", "momentum_ramp_epochs", "scale_lr_by_momentum"];
            if let Some(field) = momentum.into_iter().find(|f| given.contains(f)) {
                let name = serde_json::to_value(method).expect("a unit variant").as_str().unwrap_or("").to_string();
                return Err(self.error(
                    field,
                    format!(
                        "has no effect with {} {name} (only sgd and nesterov use momentum)",
                        self.name("optimizer")
                    ),
                ));
            }
        }
        if method != Method::Adam {
            if let Some(field) = ["adam_epsilon", "adam_form"].into_iter().find(|f| v.given().contains(f)) {
                return Err(self.error(field, format!("has no effect without {} adam", self.name("optimizer"))));
            }
        }
        match (v.momentum_start, v.momentum_ramp_epochs) {
            (Some(_), None) | (Some(_), Some(0)) => {
                return Err(
                    self.error("momentum_start", "needs --momentum-ramp-epochs N (at least 1): the ramp's length")
                )
            }
            (None, Some(_)) => {
                return Err(self.error("momentum_ramp_epochs", "needs --momentum-start: where the ramp begins"))
            }
            _ => {}
        }
        Ok(())
    }

    /// The regression options make sense together: they need `--target-col`, `--tau` needs the
    /// mse loss, and `--tau auto` a validation set.
    fn check_regression(&self) -> Result<()> {
        let v = &self.values;
        let given = v.given();
        if v.target_col.is_none() {
            if let Some(field) = ["standardize_targets", "tau"].into_iter().find(|f| given.contains(f)) {
                return Err(self.error(field, "applies to regression: give the target columns with --target-col"));
            }
            if v.loss == Some(Loss::GaussianNll) {
                return Err(self.error("loss", "gaussian-nll needs continuous targets: give --target-col"));
            }
            return Ok(());
        }
        if let Some(loss) = v.loss.filter(|l| !l.is_regression()) {
            return Err(self.error("loss", format!("{loss} is for class labels: regression takes mse or gaussian-nll")));
        }
        if v.tau.is_some() && self.loss() == Loss::GaussianNll {
            return Err(self.error(
                "tau",
                "has no effect with --loss gaussian-nll: the network predicts its own variance per example",
            ));
        }
        if self.tau()? == Some(Tau::Auto) && v.val.unwrap_or(defaults::VAL) == 0 {
            return Err(self.error("tau", "auto needs --val N: τ is chosen on the validation set"));
        }
        Ok(())
    }

    /// The loss: as given, else mse for regression and softmax cross-entropy for classification.
    pub fn loss(&self) -> Loss {
        let v = &self.values;
        v.loss.unwrap_or(if v.target_col.is_some() { Loss::MeanSquaredError } else { Loss::default() })
    }

    /// `--tau`: a positive, finite precision or `auto`.
    pub fn tau(&self) -> Result<Option<Tau>> {
        match self.values.tau.as_deref() {
            None => Ok(None),
            Some("auto") => Ok(Some(Tau::Auto)),
            Some(text) => {
                match text.parse::<f64>() {
                    Ok(t) if t > 0.0 && t.is_finite() => Ok(Some(Tau::Given(t))),
                    _ => Err(self
                        .error("tau", format!("'{}': expected a positive number or auto", shorten(text, QUOTE_CHARS)))),
                }
            }
        }
    }

    /// Refuse every option but [`RESUME_OPTIONS`]: the file defines the run.
    pub fn check_resume(&self) -> Result<()> {
        if let Some(recipe) = &self.recipe {
            return Err(Error::Config(format!(
                "--recipe {} cannot be used with --resume: the model file defines the run",
                recipe.display()
            )));
        }
        if let Some(field) = self.values.given().into_iter().find(|f| !RESUME_OPTIONS.contains(f)) {
            let allowed: Vec<String> = RESUME_OPTIONS.iter().map(|f| flag_of(f)).collect();
            return Err(Error::Config(format!(
                "{} cannot be used with --resume: the model file defines the run (only {}, --json and --threads may be given)",
                flag_of(field),
                allowed.join(", ")
            )));
        }
        if self.values.checkpoint_every == Some(0) {
            return Err(self.error("checkpoint_every", "must be at least 1"));
        }
        if self.values.patience == Some(0) {
            return Err(self.error("patience", "must be at least 1"));
        }
        Ok(())
    }

    /// The stack `arch` describes, in either form, with the keep probabilities of `--keep` or
    /// `--keep-file` and the `--scaling` of every Bernoulli noise.
    pub fn stack(&self) -> Result<Stack> {
        let v = &self.values;
        let text = v.arch.as_deref().unwrap_or(defaults::ARCH);
        let scaling = v.scaling.unwrap_or(Scaling::Inverted);
        let token_form = text.contains(',') || text.contains('x');
        let mut stack = if token_form {
            for field in ["keep", "activation"] {
                if v.given().contains(&field) {
                    return Err(self.error(
                        field,
                        format!(
                            "applies to the units-per-layer form of --arch; {} is the token form: write the noise and \
                         activations as tokens (keep0.5, relu)",
                            self.name("arch")
                        ),
                    ));
                }
            }
            Stack::parse(text, scaling).map_err(|e| Error::Config(format!("{}: {e}", self.name("arch"))))?
        } else {
            self.mlp(text, scaling)?
        };
        if let Some(file) = &v.keep_file {
            let noises = stack.noises_mut().count();
            let keep = read_keep_file(file, noises)?;
            for (spec, values) in stack.noises_mut().zip(keep) {
                spec.keep = values;
            }
        }
        self.set_concrete(&mut stack)?;
        let shown = shorten(text, QUOTE_CHARS);
        dropnet::layer::plan(&stack).map_err(|e| Error::Config(format!("{} '{shown}': {e}", self.name("arch"))))?;
        Ok(stack)
    }

    /// `--concrete-temperature` and `--concrete-per` on every concrete token; with no such token,
    /// the concrete flags are an error (they would have no effect).
    fn set_concrete(&self, stack: &mut Stack) -> Result<()> {
        let v = &self.values;
        let concrete = stack.noises_mut().filter(|s| s.noise == NoiseKind::Concrete).count();
        if concrete == 0 {
            let given = v.given();
            if let Some(field) =
                ["concrete_temperature", "concrete_per", "lengthscale"].iter().find(|f| given.contains(f))
            {
                return Err(self.error(field, "has no effect: --arch has no concrete dropout token (concreteP)"));
            }
            return Ok(());
        }
        for (field, value) in [("concrete_temperature", v.concrete_temperature), ("lengthscale", v.lengthscale)] {
            if let Some(x) = value.filter(|x| !(*x > 0.0 && x.is_finite())) {
                return Err(self.error(field, format!("{x}: expected a positive, finite number")));
            }
        }
        let settings = ConcreteSpec {
            temperature: v.concrete_temperature.unwrap_or(ConcreteSpec::TEMPERATURE),
            per_layer: v.concrete_per == Some(ConcretePer::Layer),
        };
        for spec in stack.noises_mut().filter(|s| s.noise == NoiseKind::Concrete) {
            if settings.per_layer && spec.keep.len() != 1 {
                return Err(self.error("concrete_per", "layer needs one starting keep per concrete token"));
            }
            spec.concrete = Some(settings);
        }
        Ok(())
    }

    /// The prior of a run's concrete regulariser: `--lengthscale` and, for regression, `--tau T`.
    pub fn concrete_prior(&self) -> Result<ConcretePrior> {
        let tau = match self.tau()? {
            Some(Tau::Given(t)) => Some(t),
            _ => None,
        };
        Ok(ConcretePrior { lengthscale: self.values.lengthscale.unwrap_or(ConcretePrior::LENGTHSCALE), tau })
    }

    /// A new network from the options: its stack and its initialisation.
    pub fn network(&self) -> Result<Network<f32>> {
        let v = &self.values;
        let stack = self.stack()?;
        let init = match v.init.as_deref() {
            None => Init::for_stack(&stack),
            Some(text) => text.parse::<Init>().map_err(|e| self.error("init", e))?,
        };
        Network::new(&Architecture { stack, init }, v.seed.unwrap_or(defaults::SEED))
    }

    /// The optimizer settings these options describe.
    pub fn optim_config(&self) -> Result<OptimConfig> {
        let v = &self.values;
        let d = OptimConfig::default();
        let config = OptimConfig {
            method: v.optimizer.unwrap_or(d.method),
            lr: v.lr.unwrap_or(d.lr),
            lr_schedule: v
                .lr_schedule
                .as_deref()
                .unwrap_or("constant")
                .parse()
                .map_err(|e| self.error("lr_schedule", e))?,
            momentum: v.momentum.unwrap_or(d.momentum),
            momentum_start: v.momentum_start,
            momentum_ramp_epochs: v.momentum_ramp_epochs.unwrap_or(0),
            scale_lr_by_momentum: v.scale_lr_by_momentum.unwrap_or(false),
            weight_decay: v.weight_decay.unwrap_or(0.0),
            max_norm: v.max_norm,
            eps: v.adam_epsilon.unwrap_or(d.eps),
            adam_form: v.adam_form.unwrap_or(d.adam_form),
            ..d
        };
        config.validate()?;
        Ok(config)
    }

    /// The state a new run starts from.
    pub fn train_state(&self) -> Result<TrainState> {
        let v = &self.values;
        let mut state = TrainState::new(
            v.batch.unwrap_or(defaults::BATCH),
            v.val.unwrap_or(defaults::VAL),
            v.standardize.unwrap_or(false),
            v.patience,
            self.optim_config()?,
        );
        state.standardize_targets = v.target_col.is_some() && v.standardize_targets.unwrap_or(true);
        Ok(state)
    }
}

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;
