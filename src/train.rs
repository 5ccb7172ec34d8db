//! The training loop: epochs of shuffled mini-batches, one optimizer step per batch, evaluation
//! after every epoch, early stopping, and a stop with an error when the loss stops being finite.
//!
//! Everything random is addressed, not drawn from a running generator: the order of epoch e is
//! permutation e of the shuffle stream, the masks of step s are those of address (seed, layer, s).
//! So a run resumed from the state saved after epoch e continues exactly as if it had not stopped.

use crate::data::{epoch_order, Dataset, Splits};
use crate::error::{Error, Result};
use crate::eval::{argmax, evaluate, loss_on_labels};
use crate::loss::Loss;
use crate::network::{Mode, Network};
use crate::optim::{OptimConfig, Optimizer};
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
    /// Fraction of training examples misclassified during the epoch (with dropout, as trained).
    pub train_error: f64,
    pub val_error: Option<f64>,
    pub test_error: Option<f64>,
    pub lr: f64,
    pub momentum: f64,
    pub epoch_s: f64,
    pub samples_per_s: f64,
}

/// The state of a run after its last completed epoch: enough, with the weights and optimizer
/// slots, to continue it bit for bit. Stored as JSON in model files (`training` metadata).
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
    /// Stop after this many epochs without a better validation error.
    pub patience: Option<usize>,
    pub optimizer: OptimConfig,
    pub best_val_error: Option<f64>,
    pub epochs_since_best: usize,
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
            patience,
            optimizer,
            best_val_error: None,
            epochs_since_best: 0,
            history: Vec::new(),
        }
    }
}

/// What the caller hears while training runs.
pub trait Observer {
    /// After each optimizer step: `done` of `total` steps of the epoch, the batch loss.
    fn step(&mut self, _epoch: usize, _done: usize, _total: usize, _loss: f64) {}
    /// After each epoch, with the model and state as they now are (to log, plot or checkpoint).
    fn epoch(&mut self, report: &EpochReport, net: &Network<f32>, opt: &Optimizer, state: &TrainState) -> Result<()>;
}

/// Why training ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// All epochs ran.
    Finished,
    /// The validation error did not improve for `patience` epochs.
    EarlyStopped,
}

/// The buffers of a training step: sized on the first batch, reused by every later one.
#[derive(Default)]
pub struct StepBuffers {
    x: Matrix<f32>,
    labels: Vec<usize>,
    grad: Matrix<f32>,
    one_hot: Matrix<f32>,
}

/// One optimizer step on the examples at `indices`: forward in training mode with the masks of
/// `step`, loss, backward, update. Returns the batch loss and the number misclassified; a loss that
/// is not finite stops here, before the update, with [`Error::Diverged`].
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
    data.gather(indices, &mut b.x, &mut b.labels);
    let mask_step = u32::try_from(step).map_err(|_| Error::Config("more than 2^32 training steps".into()))?;
    let out = net.forward(&b.x, Mode::Train { step: mask_step })?;
    let wrong = (0..out.rows()).filter(|&i| argmax(out.row(i)) != b.labels[i]).count();
    let batch_loss = loss_on_labels(loss, net.output(), &b.labels, &mut b.one_hot, &mut b.grad)?;
    if !batch_loss.is_finite() {
        return Err(Error::Diverged { epoch: epoch + 1, step, loss: batch_loss });
    }
    net.backward_and_update(&b.grad, opt, epoch)?;
    Ok((batch_loss, wrong))
}

/// Train `net` until `state.epochs_done == epochs` (or early stopping).
pub fn train(
    net: &mut Network<f32>,
    opt: &mut Optimizer,
    loss: Loss,
    splits: &Splits,
    epochs: usize,
    state: &mut TrainState,
    observer: &mut dyn Observer,
) -> Result<Stop> {
    loss.check_output_activation(net.layers()[net.layers().len() - 1].activation)?;
    let train = &splits.train;
    if train.features() != net.inputs() {
        return Err(Error::Config(format!(
            "the data has {} features, the network takes {}",
            train.features(),
            net.inputs()
        )));
    }
    if train.classes() > net.outputs() {
        return Err(Error::Config(format!(
            "the labels go up to {}, the network has {} outputs",
            train.classes() - 1,
            net.outputs()
        )));
    }
    if state.batch == 0 {
        return Err(Error::Config("the batch size must be at least 1".into()));
    }
    let mut buffers = StepBuffers::default();
    let total_steps = train.len().div_ceil(state.batch);
    while state.epochs_done < epochs {
        let epoch = state.epochs_done;
        let started = Instant::now();
        let (mut loss_sum, mut wrong) = (0.0, 0usize);
        for (done, chunk) in epoch_order(train.len(), net.seed(), epoch).chunks(state.batch).enumerate() {
            let (batch_loss, batch_wrong) = train_step(net, opt, loss, train, chunk, state.step, epoch, &mut buffers)?;
            loss_sum += batch_loss * chunk.len() as f64;
            wrong += batch_wrong;
            state.step += 1;
            observer.step(epoch + 1, done + 1, total_steps, batch_loss);
        }
        let epoch_s = started.elapsed().as_secs_f64();
        let val_error = splits.val.as_ref().map(|v| evaluate(net, v, loss)).transpose()?.map(|r| r.0);
        let test_error = splits.test.as_ref().map(|t| evaluate(net, t, loss)).transpose()?.map(|r| r.0);
        let report = EpochReport {
            epoch: epoch + 1,
            train_loss: loss_sum / train.len() as f64,
            train_error: wrong as f64 / train.len() as f64,
            val_error,
            test_error,
            lr: opt.config.lr_at(epoch),
            momentum: opt.config.momentum_at(epoch),
            epoch_s,
            samples_per_s: train.len() as f64 / epoch_s,
        };
        state.epochs_done += 1;
        if let Some(v) = val_error {
            if state.best_val_error.is_none_or(|best| v < best) {
                state.best_val_error = Some(v);
                state.epochs_since_best = 0;
            } else {
                state.epochs_since_best += 1;
            }
        }
        state.history.push(report.clone());
        observer.epoch(&report, net, opt, state)?;
        if let Some(patience) = state.patience {
            if val_error.is_some() && state.epochs_since_best >= patience {
                return Ok(Stop::EarlyStopped);
            }
        }
    }
    Ok(Stop::Finished)
}
