//! Optimizers (SGD with momentum or Nesterov momentum, Adam, RMSProp), L2 weight decay, max-norm,
//! and learning-rate and momentum schedules: the settings and state here, the update rules in
//! `rules`, the update made block by block inside a product in `block`, the schedules in
//! `schedule`. Nothing here knows about networks: a network hands its tensors over.
//!
//! Per parameter w with gradient g (after weight decay `g += λ·w` on weights, not biases):
//! ```text
//! sgd       v = μ·v + η·g;              w −= v                    (η·(1−μ) instead of η with
//! nesterov  v = μ·v + η·g;              w −= μ·v + η·g             --scale-lr-by-momentum)
//! adam      m = β1·m + (1−β1)·g;  s = β2·s + (1−β2)·g²;  w −= η·m̂ / (√ŝ + ε),
//!           m̂ = m/(1−β1^t), ŝ = s/(1−β2^t), t = 1, 2, ...                        (textbook form)
//!           or w −= η_t·m / (√s + ε), η_t = η·√(1−β2^t)/(1−β1^t)                   (keras form)
//! rmsprop   s = ρ·s + (1−ρ)·g²;         w −= η·g / (√s + ε)
//! max-norm  after the update, each unit's incoming weights w[j,:] are scaled down to ‖w[j,:]‖₂ ≤ c
//! ```
//! With a constant η, `sgd` and `nesterov` take exactly PyTorch's steps (whose buffer is v/η).
//! Schedules are per epoch e = 0, 1, ...

mod block;
mod rules;
mod schedule;

pub use block::BlockUpdate;
pub use rules::{max_norm, update, update_rows, Slots, StepParams};
pub use schedule::LrSchedule;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Sgd,
    Nesterov,
    Adam,
    Rmsprop,
}

/// Where Adam adds ε. `Textbook`: to √ŝ, the bias-corrected second moment (Kingma & Ba's
/// Algorithm 1, PyTorch). `Keras`: to √s, with both bias corrections folded into the step size
/// (the "more efficient" order at the end of Kingma & Ba's §2, which Keras and TensorFlow use).
/// The two differ only through ε: the keras form's ε acts as ε/√(1−β2^t) of the textbook form's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AdamForm {
    #[default]
    Textbook,
    Keras,
}

/// Everything that defines an optimizer; stored in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub method: Method,
    /// η0
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    /// μ for sgd and nesterov (the final value when ramped).
    pub momentum: f64,
    /// When set, μ rises linearly from this value at epoch 0 to `momentum` at `momentum_ramp_epochs`.
    pub momentum_start: Option<f64>,
    pub momentum_ramp_epochs: usize,
    /// Step with η·(1−μ) (Hinton et al. 2012) so that the momentum does not multiply the step size.
    pub scale_lr_by_momentum: bool,
    /// λ of L2 weight decay on weights (not biases).
    pub weight_decay: f64,
    /// c of max-norm; `None` for no constraint.
    pub max_norm: Option<f64>,
    pub beta1: f64,
    pub beta2: f64,
    /// ρ of RMSProp.
    pub rho: f64,
    /// ε of Adam and RMSProp.
    pub eps: f64,
    /// Where Adam adds ε (checkpoints written before the field existed used the textbook form).
    #[serde(default)]
    pub adam_form: AdamForm,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            method: Method::Sgd,
            lr: 0.01,
            lr_schedule: LrSchedule::Constant,
            momentum: 0.9,
            momentum_start: None,
            momentum_ramp_epochs: 0,
            scale_lr_by_momentum: false,
            weight_decay: 0.0,
            max_norm: None,
            beta1: 0.9,
            beta2: 0.999,
            rho: 0.9,
            eps: 1e-8,
            adam_form: AdamForm::Textbook,
        }
    }
}

impl OptimConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64| Err(Error::Config(format!("{what} = {v} is out of range")));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("learning rate", self.lr);
        }
        for (what, v) in [("momentum", self.momentum), ("beta1", self.beta1), ("beta2", self.beta2), ("rho", self.rho)]
        {
            if !(0.0..1.0).contains(&v) {
                return bad(what, v);
            }
        }
        if let Some(start) = self.momentum_start {
            if !(0.0..1.0).contains(&start) {
                return bad("momentum start", start);
            }
        }
        self.lr_schedule.validate().map_err(|e| Error::Config(format!("learning-rate schedule: {e}")))?;
        if !(self.eps > 0.0 && self.eps.is_finite() && (self.eps as f32) > 0.0) {
            return bad("epsilon", self.eps);
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return bad("weight decay", self.weight_decay);
        }
        if let Some(c) = self.max_norm {
            if c.is_nan() || c <= 0.0 {
                return bad("max-norm", c);
            }
        }
        Ok(())
    }

    /// The hyper-parameters of update number `t` (1-based) in epoch `epoch`: the scheduled η and μ,
    /// with η·(1−μ) when `scale_lr_by_momentum` is set for sgd or nesterov.
    pub fn step_params(&self, epoch: usize, t: u64) -> StepParams {
        let momentum = self.momentum_at(epoch);
        let mut lr = self.lr_at(epoch);
        if self.scale_lr_by_momentum && matches!(self.method, Method::Sgd | Method::Nesterov) {
            lr *= 1.0 - momentum;
        }
        StepParams {
            method: self.method,
            lr: lr as f32,
            momentum: momentum as f32,
            weight_decay: self.weight_decay as f32,
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            rho: self.rho as f32,
            eps: self.eps as f32,
            adam_form: self.adam_form,
            t,
        }
    }

    /// η of epoch e, before the (1−μ) scaling.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr_schedule.at(self.lr, epoch)
    }

    /// μ of epoch e.
    pub fn momentum_at(&self, epoch: usize) -> f64 {
        match self.momentum_start {
            Some(start) if self.momentum_ramp_epochs > 0 => {
                let t = (epoch as f64 / self.momentum_ramp_epochs as f64).min(1.0);
                start + (self.momentum - start) * t
            }
            _ => self.momentum,
        }
    }
}

/// An optimizer: its configuration, the state of every parameter tensor, and the step count.
#[derive(Clone, Debug)]
pub struct Optimizer {
    pub config: OptimConfig,
    /// One entry per parameter tensor, in [`Network::params`] order.
    pub slots: Vec<Slots>,
    /// Updates made so far.
    pub t: u64,
}

impl Optimizer {
    pub fn new(config: OptimConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, slots: Vec::new(), t: 0 })
    }

    /// Zeroed state for every parameter tensor (named, of the given lengths, in parameter order)
    /// that has none of its size yet, allocated here (an error when the memory cannot be had)
    /// rather than inside the first step.
    pub fn fit_slots<'a>(&mut self, tensors: impl ExactSizeIterator<Item = (&'a str, usize)>) -> Result<()> {
        self.slots.resize_with(tensors.len(), Slots::default);
        for (slots, (name, len)) in self.slots.iter_mut().zip(tensors) {
            if slots.first.len() != len || slots.second.len() != len {
                let mut first = Vec::new();
                let mut second = Vec::new();
                for v in [&mut first, &mut second] {
                    crate::files::reserve(v, len, || format!("the optimizer state of {name}"))?;
                    v.resize(len, 0.0);
                }
                *slots = Slots { first, second };
            }
        }
        Ok(())
    }

    /// Starts update t + 1 of a network with `tensors` parameter tensors: its hyper-parameters.
    pub fn begin_step(&mut self, epoch: usize, tensors: usize) -> StepParams {
        self.t += 1;
        self.slots.resize_with(tensors, Slots::default);
        self.config.step_params(epoch, self.t)
    }
}
