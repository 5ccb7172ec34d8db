//! Optimizers (SGD with momentum or Nesterov momentum, Adam, RMSProp), L2 weight decay, max-norm,
//! and learning-rate and momentum schedules.
//!
//! Per parameter w with gradient g (after weight decay `g += λ·w` on weights, not biases):
//! ```text
//! sgd       v = μ·v + η·g;              w −= v                    (η·(1−μ) instead of η with
//! nesterov  v = μ·v + η·g;              w −= μ·v + η·g             --scale-lr-by-momentum)
//! adam      m = β1·m + (1−β1)·g;  s = β2·s + (1−β2)·g²;  w −= η·m̂ / (√ŝ + ε),
//!           m̂ = m/(1−β1^t), ŝ = s/(1−β2^t), t = 1, 2, ...
//! rmsprop   s = ρ·s + (1−ρ)·g²;         w −= η·g / (√s + ε)
//! max-norm  after the update, each unit's incoming weights w[j,:] are scaled down to ‖w[j,:]‖₂ ≤ c
//! ```
//! With a constant η, `sgd` and `nesterov` take exactly PyTorch's steps (whose buffer is v/η).
//! Schedules are per epoch e = 0, 1, ...

use crate::error::{Error, Result};
use crate::network::Network;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Sgd,
    Nesterov,
    Adam,
    Rmsprop,
}

/// The learning rate η of epoch e.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LrSchedule {
    /// η0
    Constant,
    /// η0 · γ^e
    Exponential { gamma: f64 },
    /// η0 / (1 + decay · e)
    InverseT { decay: f64 },
    /// η0 · γ^⌊e / every⌋
    Step { every: usize, gamma: f64 },
}

impl LrSchedule {
    pub fn at(&self, lr0: f64, epoch: usize) -> f64 {
        let e = epoch as f64;
        match *self {
            LrSchedule::Constant => lr0,
            LrSchedule::Exponential { gamma } => lr0 * gamma.powf(e),
            LrSchedule::InverseT { decay } => lr0 / (1.0 + decay * e),
            LrSchedule::Step { every, gamma } => lr0 * gamma.powi((epoch / every.max(1)) as i32),
        }
    }
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
    pub eps: f64,
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

/// Optimizer state of one parameter tensor: v (or m) and s.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Slots {
    pub first: Vec<f32>,
    pub second: Vec<f32>,
}

impl Slots {
    /// Zeroed slots for a tensor of `len` values, unless they already fit.
    pub fn fit(&mut self, len: usize) {
        if self.first.len() != len {
            self.first = vec![0.0; len];
            self.second = vec![0.0; len];
        }
    }
}

/// The update of one weight matrix (rows of `width` values) made block by block, as the product
/// computing its gradient finishes each block (see [`crate::tensor::matmul_then`]).
pub struct BlockUpdate {
    v: *mut f32,
    s: *mut f32,
    rows: usize,
    width: usize,
    p: StepParams,
    norm_limit: Option<f32>,
}

// SAFETY: the pointers are used only in `apply`, whose callers hand each block to one thread.
unsafe impl Sync for BlockUpdate {}

impl BlockUpdate {
    /// The update of a `rows × width` weight matrix with these slots (fitted to it here) by step
    /// `p`, weight decay included, and max-norm when `norm_limit` is given.
    pub fn new(slots: &mut Slots, (rows, width): (usize, usize), p: StepParams, norm_limit: Option<f32>) -> Self {
        slots.fit(rows * width);
        Self { v: slots.first.as_mut_ptr(), s: slots.second.as_mut_ptr(), rows, width, p, norm_limit }
    }

    /// The rules of the module docs on rows `rows`, columns `cols` of the weights `w` (the whole
    /// matrix, of the shape given to `new`), with their gradient: element (rows.start + r,
    /// cols.start + j) at `g + r·ldg + j`. Max-norm needs whole rows: it runs here when `cols`
    /// spans the row and returns false otherwise, leaving it to [`max_norm`].
    ///
    /// # Safety
    /// `w` points to a matrix of the shape given to `new`, `g` to the block as above, and no other
    /// thread touches these rows and columns of w, g or the slots during the call.
    pub unsafe fn apply(&self, rows: Range<usize>, cols: Range<usize>, g: *const f32, ldg: usize, w: *mut f32) -> bool {
        let len = cols.len();
        self.prefetch_next(&rows, &cols, w);
        for (r, i) in rows.clone().enumerate() {
            let at = i * self.width + cols.start;
            // SAFETY: (i, cols) lies inside the matrices (the caller's contract), exclusively ours.
            let (w, v, s, g) = unsafe {
                (
                    std::slice::from_raw_parts_mut(w.add(at), len),
                    std::slice::from_raw_parts_mut(self.v.add(at), len),
                    std::slice::from_raw_parts_mut(self.s.add(at), len),
                    std::slice::from_raw_parts(g.add(r * ldg), len),
                )
            };
            update_chunk(w, g, v, s, &self.p, self.p.weight_decay);
        }
        let Some(c) = self.norm_limit else { return true };
        if len != self.width {
            return false;
        }
        let whole = rows.start * self.width..rows.end * self.width;
        // SAFETY: as above, whole rows.
        max_norm(unsafe { std::slice::from_raw_parts_mut(w.add(whole.start), whole.len()) }, self.width, c);
        true
    }

    /// Asks for the weights and the slots the method uses of the next strip of rows (the
    /// product's next block in the same columns) to be brought into L2: the product computes that
    /// block's gradient before its update needs them, so their load from memory overlaps the
    /// arithmetic (W1 steps about 1% faster, interleaved in-process A/B in BENCHMARKS.md).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn prefetch_next(&self, rows: &Range<usize>, cols: &Range<usize>, w: *const f32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            let (first, second) = match self.p.method {
                Method::Sgd | Method::Nesterov => (true, false),
                Method::Adam => (true, true),
                Method::Rmsprop => (false, true),
            };
            for i in rows.end..(rows.end + rows.len()).min(self.rows) {
                for j in cols.clone().step_by(16) {
                    let at = i * self.width + j;
                    // SAFETY: prefetching never faults; (i, j) lies inside all three matrices.
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T1>(w.add(at) as *const i8);
                        if first {
                            _mm_prefetch::<_MM_HINT_T1>(self.v.add(at) as *const i8);
                        }
                        if second {
                            _mm_prefetch::<_MM_HINT_T1>(self.s.add(at) as *const i8);
                        }
                    }
                }
            }
        }
    }
}

/// The hyper-parameters of one step.
#[derive(Clone, Copy, Debug)]
pub struct StepParams {
    pub method: Method,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub rho: f32,
    pub eps: f32,
    /// Adam's step count t (1 for the first step).
    pub t: u64,
}

/// One update of one tensor, in a single pass over its values (see [`update_rows`]).
pub fn update(w: &mut [f32], g: &[f32], slots: &mut Slots, p: &StepParams, decay: bool) {
    let len = w.len();
    update_rows(w, g, slots, p, decay, len.max(1), None);
}

/// Update a tensor of rows of `width` values and, with `norm_limit = Some(c)`, scale each row down to
/// length ≤ c right after its update, while it is still in cache. Chunks of whole rows run in
/// parallel; every element's arithmetic is independent, so the result does not depend on threads.
pub fn update_rows(
    w: &mut [f32],
    g: &[f32],
    slots: &mut Slots,
    p: &StepParams,
    decay: bool,
    width: usize,
    norm_limit: Option<f32>,
) {
    slots.fit(w.len());
    let lambda = if decay { p.weight_decay } else { 0.0 };
    let chunk = width * (16 * 1024 / width).max(1);
    w.par_chunks_mut(chunk)
        .zip(g.par_chunks(chunk))
        .zip(slots.first.par_chunks_mut(chunk))
        .zip(slots.second.par_chunks_mut(chunk))
        .for_each(|(((w, g), v), s)| {
            update_chunk(w, g, v, s, p, lambda);
            if let Some(c) = norm_limit {
                max_norm(w, width, c);
            }
        });
}

/// The update rules of the module docs over one chunk, compiled for AVX-512 as well and chosen at
/// run time (the loops are written as zipped iterators so that both builds vectorise them).
fn update_chunk(w: &mut [f32], g: &[f32], v: &mut [f32], s: &mut [f32], p: &StepParams, lambda: f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512() {
        // SAFETY: `cpu::avx512()` checks every feature the function is compiled with.
        return unsafe { update_chunk_avx512(w, g, v, s, p, lambda) };
    }
    update_chunk_portable(w, g, v, s, p, lambda)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,bmi2")]
unsafe fn update_chunk_avx512(w: &mut [f32], g: &[f32], v: &mut [f32], s: &mut [f32], p: &StepParams, lambda: f32) {
    update_chunk_portable(w, g, v, s, p, lambda)
}

#[inline(always)]
fn update_chunk_portable(w: &mut [f32], g: &[f32], v: &mut [f32], s: &mut [f32], p: &StepParams, lambda: f32) {
    match p.method {
        Method::Sgd => {
            for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                let gi = g + lambda * *w;
                *v = p.momentum * *v + p.lr * gi;
                *w -= *v;
            }
        }
        Method::Nesterov => {
            for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                let gi = g + lambda * *w;
                *v = p.momentum * *v + p.lr * gi;
                *w -= p.momentum * *v + p.lr * gi;
            }
        }
        Method::Adam => {
            let c1 = (1.0 - (p.beta1 as f64).powf(p.t as f64)) as f32;
            let c2 = (1.0 - (p.beta2 as f64).powf(p.t as f64)) as f32;
            for (((w, &g), m), s) in w.iter_mut().zip(g).zip(v.iter_mut()).zip(s.iter_mut()) {
                let gi = g + lambda * *w;
                *m = p.beta1 * *m + (1.0 - p.beta1) * gi;
                *s = p.beta2 * *s + (1.0 - p.beta2) * gi * gi;
                *w -= p.lr * (*m / c1) / ((*s / c2).sqrt() + p.eps);
            }
        }
        Method::Rmsprop => {
            for ((w, &g), s) in w.iter_mut().zip(g).zip(s.iter_mut()) {
                let gi = g + lambda * *w;
                *s = p.rho * *s + (1.0 - p.rho) * gi * gi;
                *w -= p.lr * gi / (s.sqrt() + p.eps);
            }
        }
    }
}

/// Scale each row of `w` (rows of `width` values: [out, in]) down to Euclidean length at most `c`.
pub fn max_norm(w: &mut [f32], width: usize, c: f32) {
    for row in w.chunks_mut(width) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > c {
            let scale = c / norm;
            row.iter_mut().for_each(|x| *x *= scale);
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

    /// Zeroed state for every parameter tensor of `net` that has none of its size yet, allocated
    /// here (an error when the memory cannot be had) rather than inside the first step.
    pub fn fit_slots(&mut self, net: &Network<f32>) -> Result<()> {
        let params = net.params();
        self.slots.resize_with(params.len(), Slots::default);
        for (slots, p) in self.slots.iter_mut().zip(&params) {
            let len = p.value.len();
            if slots.first.len() != len || slots.second.len() != len {
                let mut first = Vec::new();
                let mut second = Vec::new();
                for v in [&mut first, &mut second] {
                    crate::files::reserve(v, len, || format!("the optimizer state of {}", p.name))?;
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

    /// Apply one update to every parameter of `net` from its current gradients, in epoch `epoch`.
    /// (Training calls [`Network::backward_and_update`] instead, which makes the same update of
    /// each weight matrix while its gradient is being computed.)
    pub fn step(&mut self, net: &mut Network<f32>, epoch: usize) {
        let p = self.begin_step(epoch, 2 * net.layers().len());
        let layers = net.layers_mut();
        for (l, layer) in layers.iter_mut().enumerate() {
            let (inputs, c) = (layer.inputs(), self.config.max_norm.map(|c| c as f32));
            let weight = layer.weight.as_mut_slice();
            update_rows(weight, layer.weight_grad.as_slice(), &mut self.slots[2 * l], &p, true, inputs, c);
            update(&mut layer.bias, &layer.bias_grad, &mut self.slots[2 * l + 1], &p, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lr 0.1, momentum 0.9, β1 0.9, β2 0.999, ρ 0.9, ε 1e-8 (the defaults but for lr).
    fn params(method: Method) -> StepParams {
        OptimConfig { method, lr: 0.1, ..OptimConfig::default() }.step_params(0, 1)
    }

    /// Run `method` on one weight w0 = 1 with the given gradients; return the weights after each step.
    fn run(method: Method, grads: &[f32], decay: f32) -> Vec<f32> {
        let mut w = [1.0f32];
        let mut slots = Slots::default();
        let mut out = Vec::new();
        for (t, &g) in grads.iter().enumerate() {
            let p = StepParams { t: t as u64 + 1, weight_decay: decay, ..params(method) };
            update(&mut w, &[g], &mut slots, &p, true);
            out.push(w[0]);
        }
        out
    }

    fn close(got: &[f32], expected: &[f64]) {
        for (g, e) in got.iter().zip(expected) {
            assert!((*g as f64 - e).abs() < 1e-6, "got {got:?}, expected {expected:?}");
        }
    }

    // Expected values below were worked out by hand from the formulas at the top of this file.

    #[test]
    fn sgd_momentum() {
        // v: 0.05, 0.095, 0.1355  →  w: 0.95, 0.855, 0.7195
        close(&run(Method::Sgd, &[0.5, 0.5, 0.5], 0.0), &[0.95, 0.855, 0.7195]);
    }

    #[test]
    fn nesterov() {
        // v1 = 0.05, w1 = 1 − (0.045 + 0.05) = 0.905; v2 = 0.095, w2 = 0.905 − (0.0855 + 0.05) = 0.7695
        close(&run(Method::Nesterov, &[0.5, 0.5], 0.0), &[0.905, 0.7695]);
    }

    #[test]
    fn adam_with_bias_correction() {
        // t=1: m̂ = 0.5, ŝ = 0.25 → w = 1 − 0.1·0.5/0.5 = 0.9
        // t=2 (g = −0.25): m = 0.02, m̂ = 0.02/0.19 = 0.1052632; s = 0.00031225, ŝ = 0.1562031,
        //      √ŝ = 0.3952254 → w = 0.9 − 0.1·0.1052632/0.3952254 = 0.8733668
        close(&run(Method::Adam, &[0.5, -0.25], 0.0), &[0.9, 0.8733668]);
    }

    #[test]
    fn rmsprop() {
        // s = 0.025, w = 1 − 0.1·0.5/√0.025 = 1 − 0.3162278
        close(&run(Method::Rmsprop, &[0.5], 0.0), &[0.6837722]);
    }

    #[test]
    fn weight_decay_adds_lambda_w_to_the_gradient() {
        // g = 0 + 0.5·1 = 0.5 → the same first step as plain SGD with g = 0.5
        close(&run(Method::Sgd, &[0.0], 0.5), &[0.95]);
    }

    #[test]
    fn max_norm_scales_only_long_rows() {
        let mut w = [3.0, 4.0, 0.3, 0.4];
        max_norm(&mut w, 2, 1.0);
        close(&w, &[0.6, 0.8, 0.3, 0.4]);
    }

    #[test]
    fn schedules() {
        assert_eq!(LrSchedule::Constant.at(0.1, 5), 0.1);
        assert!((LrSchedule::Exponential { gamma: 0.5 }.at(0.1, 2) - 0.025).abs() < 1e-15);
        assert!((LrSchedule::InverseT { decay: 1.0 }.at(0.1, 3) - 0.025).abs() < 1e-15);
        assert!((LrSchedule::Step { every: 2, gamma: 0.1 }.at(1.0, 5) - 0.01).abs() < 1e-15);
        let ramp =
            OptimConfig { momentum: 0.99, momentum_start: Some(0.5), momentum_ramp_epochs: 10, ..Default::default() };
        assert_eq!(ramp.momentum_at(0), 0.5);
        assert!((ramp.momentum_at(5) - 0.745).abs() < 1e-12);
        assert_eq!(ramp.momentum_at(20), 0.99);
    }

    #[test]
    fn out_of_range_settings_are_errors() {
        assert!(OptimConfig { lr: -1.0, ..Default::default() }.validate().is_err());
        assert!(OptimConfig { momentum: 1.0, ..Default::default() }.validate().is_err());
        assert!(OptimConfig { max_norm: Some(0.0), ..Default::default() }.validate().is_err());
    }
}
