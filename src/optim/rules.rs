//! The update rules of the module docs on one tensor, and max-norm.

use super::Method;
use rayon::prelude::*;

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
    pub adam_form: super::AdamForm,
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
pub(super) fn update_chunk(w: &mut [f32], g: &[f32], v: &mut [f32], s: &mut [f32], p: &StepParams, lambda: f32) {
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
            if p.adam_form == super::AdamForm::Keras {
                // η_t = η·√(1−β2^t)/(1−β1^t), computed once per step in double precision
                let lr_t = (p.lr as f64 * (c2 as f64).sqrt() / c1 as f64) as f32;
                for (((w, &g), m), s) in w.iter_mut().zip(g).zip(v.iter_mut()).zip(s.iter_mut()) {
                    let gi = g + lambda * *w;
                    *m = p.beta1 * *m + (1.0 - p.beta1) * gi;
                    *s = p.beta2 * *s + (1.0 - p.beta2) * gi * gi;
                    *w -= lr_t * *m / (s.sqrt() + p.eps);
                }
                return;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{AdamForm, LrSchedule, OptimConfig};

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
    fn adam_s_two_forms_differ_only_through_epsilon() {
        // ε = 0.1, g = 0.5, t = 1: m = 0.05, s = 0.00025, 1−β1 = 0.1, 1−β2 = 0.001
        // textbook: w = 1 − 0.1·(0.05/0.1)/(√(0.00025/0.001) + 0.1) = 1 − 0.05/0.6 = 0.9166667
        // keras: η_t = 0.1·√0.001/0.1 = 0.0316228, w = 1 − 0.0316228·0.05/(√0.00025 + 0.1) = 0.9863473
        let p = |adam_form| StepParams { eps: 0.1, adam_form, ..params(Method::Adam) };
        for (form, expected) in [(AdamForm::Textbook, 0.9166667), (AdamForm::Keras, 0.9863473)] {
            let mut w = [1.0f32];
            update(&mut w, &[0.5], &mut Slots::default(), &p(form), true);
            close(&w, &[expected]);
        }
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
