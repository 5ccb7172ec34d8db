//! The training loop: epochs of shuffled mini-batches, one optimizer step per batch, evaluation
//! after every epoch, early stopping, a stop when the loss diverges, and a stop between two steps
//! when the caller asks for one (an interrupted run).
//!
//! Everything random is addressed, not drawn from a running generator: the order of epoch e is
//! permutation e of the shuffle stream, the masks of step s are those of address (seed, layer, s).
//! So a run resumed from its saved state, even one saved in the middle of an epoch, continues
//! exactly as if it had not stopped.

use crate::data::{epoch_order, Batch, Dataset, Source, Splits, Targets};
use crate::dropout::{ConcretePrior, KeepSummary};
use crate::error::{Error, Result};
use crate::eval::{argmax, evaluate, loss_on_labels};
use crate::limits::{MAX_BATCH, MAX_TENSOR_ELEMENTS};
use crate::loss::{Loss, Targets as LossTargets};
use crate::network::{Mode, Network};
use crate::optim::{OptimConfig, Optimizer};
use crate::regression::{self, Outputs};
use crate::tensor::Matrix;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// What one epoch did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (with dropout, as trained).
    pub train_loss: f64,
    /// Fraction of training examples misclassified during the epoch (with dropout, as trained;
    /// classification only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_error: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_error: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_error: Option<f64>,
    /// Regression: the evaluation-mode RMSE per target on the validation set, original units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_rmse: Option<PerTarget>,
    /// Regression: the same on the test set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_rmse: Option<PerTarget>,
    /// The learned keep of each concrete dropout after the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<Vec<KeepSummary>>,
    pub lr: f64,
    pub momentum: f64,
    pub epoch_s: f64,
    pub samples_per_s: f64,
}

/// One value per regression target, written as a number when there is one target and as an
/// array otherwise (the form `eval --json` uses too).
#[derive(Clone, Debug, PartialEq)]
pub struct PerTarget(pub Vec<f64>);

impl Serialize for PerTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_f64(*one),
            all => all.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PerTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(f64),
            Many(Vec<f64>),
        }
        Ok(PerTarget(match Form::deserialize(d)? {
            Form::One(v) => vec![v],
            Form::Many(v) => v,
        }))
    }
}

impl PerTarget {
    /// The JSON form: a number for one target, an array for several.
    pub fn json(values: &[f64]) -> serde_json::Value {
        serde_json::to_value(PerTarget(values.to_vec())).expect("plain numbers serialise")
    }
}

/// The steps of an epoch that an interrupted run completed, and their running sums.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// Steps of the epoch done (the next one to run is this index of the epoch's order).
    pub steps_done: usize,
    /// Σ batch loss · batch size over those steps.
    pub loss_sum: f64,
    /// Examples misclassified in those steps.
    pub wrong: usize,
    /// Seconds those steps took.
    pub seconds: f64,
}

/// The rule that stops a run whose loss runs away: a batch loss that is not finite, or a loss
/// that, smoothed over about ten steps, exceeds [`DivergenceWatch::FACTOR`] times the run's first
/// batch loss (the loss of the initial weights), or times [`DivergenceWatch::FLOOR`] when that is
/// larger. The floor keeps a lucky first batch (a small batch the initial weights happen to fit)
/// from setting a bound that ordinary training crosses; a loss of 100 is far beyond any working
/// run of a classification loss (cross-entropy 100 means a probability of e^-100 for the truth).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DivergenceWatch {
    /// The first batch loss of the run.
    pub first_loss: f64,
    /// Exponential moving average of the batch loss, weight [`DivergenceWatch::WEIGHT`] on the newest.
    pub smoothed_loss: f64,
}

impl DivergenceWatch {
    /// How far above its start the smoothed loss may climb.
    pub const FACTOR: f64 = 100.0;
    /// The weight of the newest batch in the smoothed loss (about ten steps of memory).
    pub const WEIGHT: f64 = 0.1;
    /// The smallest first loss the bound is taken from.
    pub const FLOOR: f64 = 1.0;

    /// Take in one batch loss; `Some(reason)` when the run has diverged.
    pub fn observe(watch: &mut Option<Self>, loss: f64) -> Option<String> {
        if !loss.is_finite() {
            return Some(format!("the batch loss is {loss}"));
        }
        let w = watch.get_or_insert(Self { first_loss: loss, smoothed_loss: loss });
        w.smoothed_loss = (1.0 - Self::WEIGHT) * w.smoothed_loss + Self::WEIGHT * loss;
        let bound = Self::FACTOR * w.first_loss.max(Self::FLOOR);
        (w.smoothed_loss > bound).then(|| {
            format!(
                "the loss, smoothed over the last steps, is {:.4e}: more than {} times the first batch's {:.4e}",
                w.smoothed_loss,
                Self::FACTOR,
                w.first_loss
            )
        })
    }
}

/// The state of a run: enough, with the weights and optimizer slots, to continue it bit for bit.
/// Stored as JSON in model files (`training` metadata); its floats read back exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub epochs_done: usize,
    /// Optimizer steps taken (the mask address of the next step).
    pub step: u64,
    pub batch: usize,
    /// Validation examples held out of the training file.
    pub val: usize,
    /// Whether features were standardised with the training set's moments.
    pub standardize: bool,
    /// Whether regression targets were standardised with the training set's moments.
    #[serde(default)]
    pub standardize_targets: bool,
    /// Regression: choose τ on the validation set when the run ends (`--tau auto`).
    #[serde(default)]
    pub choose_tau: bool,
    /// Stop after this many epochs without a better validation error.
    pub patience: Option<usize>,
    pub optimizer: OptimConfig,
    /// The best validation score so far: the error, or for regression the RMSE averaged over the
    /// targets, each divided by its training-set deviation when the targets were standardised.
    pub best_val_error: Option<f64>,
    pub epochs_since_best: usize,
    /// The epochs the run was asked for (a resumed run goes on to this total unless told otherwise).
    #[serde(default)]
    pub target_epochs: Option<usize>,
    /// The data the run trains on (absolute paths): a resumed run reads it again.
    #[serde(default)]
    pub data: Option<Source>,
    /// Set when the run stopped between two steps of an epoch.
    #[serde(default)]
    pub partial_epoch: Option<PartialEpoch>,
    /// The divergence rule's memory (set from the first step on).
    #[serde(default)]
    pub divergence: Option<DivergenceWatch>,
    /// The prior of the concrete regulariser (math.md N6; `None`: its defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concrete: Option<ConcretePrior>,
    pub history: Vec<EpochReport>,
}

impl TrainState {
    pub fn new(batch: usize, val: usize, standardize: bool, patience: Option<usize>, optimizer: OptimConfig) -> Self {
        Self {
            epochs_done: 0,
            step: 0,
            batch,
            val,
            standardize,
            standardize_targets: false,
            choose_tau: false,
            patience,
            optimizer,
            best_val_error: None,
            epochs_since_best: 0,
            target_epochs: None,
            data: None,
            partial_epoch: None,
            divergence: None,
            concrete: None,
            history: Vec::new(),
        }
    }

    /// Whether the state is one a run can be in (what a model file's `training` must satisfy).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(format!("batch {} is outside 1..={MAX_BATCH}", self.batch));
        }
        self.optimizer.validate().map_err(|e| e.to_string())?;
        if self.history.len() != self.epochs_done {
            return Err(format!("{} epochs done but {} in the history", self.epochs_done, self.history.len()));
        }
        if self.patience == Some(0) {
            return Err("patience 0".into());
        }
        if let Some(p) = &self.partial_epoch {
            if p.steps_done == 0 || !(p.loss_sum.is_finite() && p.seconds.is_finite()) {
                return Err("the position inside the epoch is invalid".into());
            }
        }
        if let Some(c) = &self.concrete {
            c.validate()?;
        }
        if let Some(w) = &self.divergence {
            if !(w.first_loss.is_finite() && w.smoothed_loss.is_finite()) {
                return Err("the divergence rule's losses are not finite".into());
            }
        }
        Ok(())
    }
}

/// What the caller hears while training runs.
pub trait Observer {
    /// After each optimizer step: `done` of `total` steps of the epoch, the batch loss.
    fn step(&mut self, _epoch: usize, _done: usize, _total: usize, _loss: f64) {}
    /// After each epoch, with the model and state as they now are (to log, plot or checkpoint).
    fn epoch(&mut self, report: &EpochReport, net: &Network<f32>, opt: &Optimizer, state: &TrainState) -> Result<()>;
    /// Asked before every step: true ends the run there ([`Stop::Interrupted`]).
    fn interrupted(&self) -> bool {
        false
    }
}

/// A run that stopped because its loss ran away.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    /// 1-based epoch of the step.
    pub epoch: usize,
    pub step: u64,
    pub reason: String,
}

/// Why training ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    /// All epochs ran.
    Finished,
    /// The validation error did not improve for `patience` epochs.
    EarlyStopped,
    /// The observer asked to stop; the state records where (in `partial_epoch` when inside one).
    Interrupted,
    /// The loss or the parameters stopped being usable. The network, optimizer and state are
    /// those of the failing step: the last good ones are whatever was saved before.
    Diverged(Divergence),
}

/// The buffers of a training step: sized on the first batch, reused by every later one.
#[derive(Default)]
pub struct StepBuffers {
    batch: Batch,
    grad: Matrix<f32>,
    one_hot: Matrix<f32>,
}

/// One optimizer step on the examples at `indices`: forward in training mode with the masks of
/// `step`, loss, backward, update. Returns the batch loss and the number misclassified (0 for
/// regression); a loss that is not finite is returned before any update is made.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    net: &mut Network<f32>,
    opt: &mut Optimizer,
    loss: Loss,
    data: &Dataset,
    indices: &[usize],
    step: u64,
    epoch: usize,
    b: &mut StepBuffers,
) -> Result<(f64, usize)> {
    data.gather(indices, &mut b.batch);
    let mask_step = u32::try_from(step).map_err(|_| Error::Config("more than 2^32 training steps".into()))?;
    let out = net.forward(&b.batch.x, Mode::Train { step: mask_step })?;
    let (batch_loss, wrong) = match &data.y {
        Targets::Labels(_) => {
            let labels = &b.batch.labels;
            let wrong = (0..out.rows()).filter(|&i| argmax(out.row(i)) != labels[i]).count();
            (loss_on_labels(loss, net.output(), labels, &mut b.one_hot, &mut b.grad)?, wrong)
        }
        Targets::Values(_) => (loss.compute(net.output(), LossTargets::Values(&b.batch.values), &mut b.grad)?, 0),
    };
    if batch_loss.is_finite() {
        net.backward_and_update(&b.grad, opt, epoch)?;
    }
    Ok((batch_loss, wrong))
}

/// The first parameter or optimizer value that is not finite, named, or `None`.
pub fn first_non_finite(net: &Network<f32>, opt: &Optimizer) -> Option<String> {
    for (p, slots) in net.params().iter().zip(opt.slots.iter().map(Some).chain(std::iter::repeat(None))) {
        if let Some(v) = p.value.iter().find(|v| !v.is_finite()) {
            return Some(format!("{} holds {v}", p.name));
        }
        if let Some(s) = slots {
            for (which, values) in [("first", &s.first), ("second", &s.second)] {
                if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                    return Some(format!("the optimizer state optimizer.{}.{which} holds {v}", p.name));
                }
            }
        }
    }
    None
}

/// Checks that `net`, `data` and `state` can train together, before any step.
fn check_run(net: &Network<f32>, loss: Loss, train: &Dataset, state: &TrainState) -> Result<usize> {
    loss.check_output_activation(net.output_activation())?;
    if train.is_empty() {
        return Err(Error::Config("the training set has no examples".into()));
    }
    if train.features() != net.inputs() {
        return Err(Error::Config(format!(
            "the data has {} features, the network takes {}",
            train.features(),
            net.inputs()
        )));
    }
    match &train.y {
        Targets::Labels(_) if !loss.takes_labels() => {
            return Err(Error::Config(format!("loss {loss} needs continuous targets (--target-col), not class labels")))
        }
        Targets::Labels(_) if train.classes() > net.outputs() => {
            return Err(Error::Config(format!(
                "the labels go up to {}, the network has {} outputs",
                train.classes() - 1,
                net.outputs()
            )));
        }
        Targets::Values(y) => check_regression_outputs(net, loss, y.cols())?,
        Targets::Labels(_) => {}
    }
    if state.batch == 0 || state.batch > MAX_BATCH {
        return Err(Error::Config(format!("batch size {}: it must be in 1..={MAX_BATCH}", state.batch)));
    }
    let widest = net.values_per_example();
    if state.batch.saturating_mul(widest) > MAX_TENSOR_ELEMENTS {
        return Err(Error::Config(format!(
            "a batch of {} examples: a layer that needs {widest} values per example would need more than {MAX_TENSOR_ELEMENTS} for it",
            state.batch
        )));
    }
    let steps = train.len().div_ceil(state.batch);
    if let Some(p) = &state.partial_epoch {
        if p.steps_done >= steps {
            return Err(Error::Config(format!(
                "the saved run stopped after step {} of an epoch, but this data set has {steps} steps per epoch",
                p.steps_done
            )));
        }
    }
    Ok(steps)
}

/// A regression network needs one output per target (mse) or two (gaussian-nll: means, then
/// log-variances).
pub fn check_regression_outputs(net: &Network<f32>, loss: Loss, targets: usize) -> Result<()> {
    if !loss.is_regression() {
        return Err(Error::Config(format!("loss {loss} is for class labels: regression takes mse or gaussian-nll")));
    }
    let needed = targets * loss.outputs_per_target();
    if net.outputs() != needed {
        let per = if loss == Loss::GaussianNll { " (a mean and a log-variance per target)" } else { "" };
        return Err(Error::Config(format!(
            "--arch ends with {} outputs, but {targets} target(s) with loss {loss} need {needed}{per}",
            net.outputs()
        )));
    }
    Ok(())
}

/// Train `net` until `state.epochs_done == epochs`, early stopping, divergence or interruption.
pub fn train(
    net: &mut Network<f32>,
    opt: &mut Optimizer,
    loss: Loss,
    splits: &Splits,
    epochs: usize,
    state: &mut TrainState,
    observer: &mut dyn Observer,
) -> Result<Stop> {
    let train = &splits.train;
    let total_steps = check_run(net, loss, train, state)?;
    crate::data::check_image_input(splits.image, net.stack().input)?;
    let params = net.params();
    opt.fit_slots(params.iter().map(|p| (p.name.as_str(), p.value.len())))?;
    let variances: Option<Vec<f64>> =
        splits.target_standardization.as_ref().map(|s| s.std.iter().map(|&d| (d as f64).powi(2)).collect());
    let prior = state.concrete.unwrap_or_default();
    net.set_concrete_regularizer(prior.regularizer(train.len(), loss, net.outputs(), variances.as_deref()));
    if patience_reached(state) {
        return Ok(Stop::EarlyStopped);
    }
    let mut buffers = StepBuffers::default();
    while state.epochs_done < epochs {
        let epoch = state.epochs_done;
        let resumed = state.partial_epoch.take();
        let (mut done, mut loss_sum, mut wrong, seconds_before) =
            resumed.map_or((0, 0.0, 0, 0.0), |p| (p.steps_done, p.loss_sum, p.wrong, p.seconds));
        let started = Instant::now();
        let order = epoch_order(train.len(), net.seed(), epoch);
        for chunk in order.chunks(state.batch).skip(done) {
            if observer.interrupted() {
                let seconds = seconds_before + started.elapsed().as_secs_f64();
                state.partial_epoch = (done > 0).then_some(PartialEpoch { steps_done: done, loss_sum, wrong, seconds });
                return Ok(Stop::Interrupted);
            }
            let (batch_loss, batch_wrong) = train_step(net, opt, loss, train, chunk, state.step, epoch, &mut buffers)?;
            let mut watch = state.divergence.clone();
            if let Some(reason) = DivergenceWatch::observe(&mut watch, batch_loss) {
                return Ok(Stop::Diverged(Divergence { epoch: epoch + 1, step: state.step, reason }));
            }
            state.divergence = watch;
            loss_sum += batch_loss * chunk.len() as f64;
            wrong += batch_wrong;
            state.step += 1;
            done += 1;
            observer.step(epoch + 1, done, total_steps, batch_loss);
        }
        if let Some(reason) = first_non_finite(net, opt) {
            return Ok(Stop::Diverged(Divergence { epoch: epoch + 1, step: state.step, reason }));
        }
        let epoch_s = seconds_before + started.elapsed().as_secs_f64();
        let report = finish_epoch(net, loss, splits, opt, state, epoch, loss_sum, wrong, epoch_s)?;
        observer.epoch(&report, net, opt, state)?;
        if report.val_error.is_some() && patience_reached(state) {
            return Ok(Stop::EarlyStopped);
        }
        if observer.interrupted() && state.epochs_done < epochs {
            return Ok(Stop::Interrupted);
        }
    }
    Ok(Stop::Finished)
}

/// Whether the validation error has not improved for `patience` epochs (a run resumed after it
/// stopped early stops again at once).
fn patience_reached(state: &TrainState) -> bool {
    state.patience.is_some_and(|p| state.best_val_error.is_some() && state.epochs_since_best >= p)
}

/// Evaluate after epoch `epoch` (0-based), record it in `state` and return its report.
#[allow(clippy::too_many_arguments)]
fn finish_epoch(
    net: &mut Network<f32>,
    loss: Loss,
    splits: &Splits,
    opt: &Optimizer,
    state: &mut TrainState,
    epoch: usize,
    loss_sum: f64,
    wrong: usize,
    epoch_s: f64,
) -> Result<EpochReport> {
    let n = splits.train.len() as f64;
    let regression = matches!(splits.train.y, Targets::Values(_));
    let scores =
        if regression { regression_scores(net, loss, splits)? } else { classification_scores(net, loss, splits)? };
    let report = EpochReport {
        epoch: epoch + 1,
        train_loss: loss_sum / n,
        train_error: (!regression).then(|| wrong as f64 / n),
        val_error: scores.val_error,
        test_error: scores.test_error,
        val_rmse: scores.val_rmse.clone().map(PerTarget),
        test_rmse: scores.test_rmse.map(PerTarget),
        keep: Some(net.learned_keep().iter().map(|(layer, keep)| KeepSummary::of(*layer, keep)).collect::<Vec<_>>())
            .filter(|k| !k.is_empty()),
        lr: opt.config.lr_at(epoch),
        momentum: opt.config.momentum_at(epoch),
        epoch_s,
        samples_per_s: n / epoch_s.max(1e-9),
    };
    state.epochs_done += 1;
    if let Some(v) = scores.val_score {
        if state.best_val_error.is_none_or(|best| v < best) {
            state.best_val_error = Some(v);
            state.epochs_since_best = 0;
        } else {
            state.epochs_since_best += 1;
        }
    }
    state.history.push(report.clone());
    Ok(report)
}

/// What an epoch's evaluation found.
#[derive(Default)]
struct Scores {
    val_error: Option<f64>,
    test_error: Option<f64>,
    val_rmse: Option<Vec<f64>>,
    test_rmse: Option<Vec<f64>>,
    /// What early stopping watches (lower is better).
    val_score: Option<f64>,
}

fn classification_scores(net: &mut Network<f32>, loss: Loss, splits: &Splits) -> Result<Scores> {
    let val_error = splits.val.as_ref().map(|v| evaluate(net, v, loss)).transpose()?.map(|r| r.0);
    let test_error = splits.test.as_ref().map(|t| evaluate(net, t, loss)).transpose()?.map(|r| r.0);
    Ok(Scores { val_error, test_error, val_score: val_error, ..Scores::default() })
}

/// The RMSE of the validation and test sets; the validation score is the RMSE averaged over the
/// targets, each in units of its training-set deviation when the targets were standardised.
fn regression_scores(net: &mut Network<f32>, loss: Loss, splits: &Splits) -> Result<Scores> {
    let scale = splits.target_standardization.as_ref();
    let outputs = Outputs::of(net, loss, scale)?;
    let val_rmse = splits.val.as_ref().map(|v| regression::rmse(net, v, outputs)).transpose()?;
    let test_rmse = splits.test.as_ref().map(|t| regression::rmse(net, t, outputs)).transpose()?;
    let val_score = val_rmse.as_ref().map(|r| {
        let std = |d: usize| scale.map_or(1.0, |s| s.std[d] as f64);
        r.iter().enumerate().map(|(d, e)| e / std(d)).sum::<f64>() / r.len().max(1) as f64
    });
    Ok(Scores { val_rmse, test_rmse, val_score, ..Scores::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_reads_back_bit_for_bit() {
        // 35/300 read back one ulp off without serde_json's float_roundtrip, which changed where
        // a resumed run stopped early.
        let mut state = TrainState::new(16, 60, false, Some(2), OptimConfig::default());
        state.best_val_error = Some(35.0 / 300.0);
        state.partial_epoch = Some(PartialEpoch { steps_done: 3, loss_sum: 0.1 + 0.2, wrong: 1, seconds: 1.0 / 3.0 });
        state.divergence = Some(DivergenceWatch { first_loss: 10f64.ln() * 0.7, smoothed_loss: 1e-300 * 3.0 });
        let back: TrainState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back.best_val_error.unwrap().to_bits(), (35.0f64 / 300.0).to_bits());
        assert_eq!(back, state);
    }

    #[test]
    fn the_divergence_rule_fires_on_a_runaway_loss_and_not_on_noise() {
        let mut watch = None;
        // a noisy loss that falls: never diverged
        for step in 0..1000 {
            let loss = 2.3 * (-(step as f64) / 300.0).exp() + 0.3 * ((step * 7919) % 13) as f64 / 13.0;
            assert_eq!(DivergenceWatch::observe(&mut watch, loss), None, "step {step}");
        }
        // a loss that jumps to 1e7: the smoothed loss passes 100 · 2.3 within a step
        let mut watch = None;
        assert_eq!(DivergenceWatch::observe(&mut watch, 2.3), None);
        assert!(DivergenceWatch::observe(&mut watch, 1e7).unwrap().contains("more than 100 times"));
        // a single outlier of 20 times the start does not stop the run
        let mut watch = None;
        DivergenceWatch::observe(&mut watch, 2.3);
        assert_eq!(DivergenceWatch::observe(&mut watch, 46.0), None);
        // a lucky first batch (loss 0.002) does not make ordinary losses of 3 look like divergence
        let mut watch = None;
        DivergenceWatch::observe(&mut watch, 0.002);
        for _ in 0..100 {
            assert_eq!(DivergenceWatch::observe(&mut watch, 3.0), None);
        }
        assert!(DivergenceWatch::observe(&mut None, f64::NAN).unwrap().contains("NaN"));
    }
}
