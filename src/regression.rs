//! Regression: the evaluation-mode RMSE, and the predictive distribution of Monte-Carlo dropout
//! (Gal & Ghahramani 2016) with its test log-likelihood, homoscedastic (observation precision τ)
//! or heteroscedastic (the network predicts a log-variance per target, Kendall & Gal 2017).
//!
//! The network sees standardised targets when the model was trained with them; everything here is
//! in the original units: a standardised output v is `mean + std · v`, a log-variance s becomes
//! the variance `e^s · std²`. Formulas R3–R5 in docs/math.md.

use crate::data::{Dataset, Standardization};
use crate::error::{Error, Result};
use crate::eval::for_each_pass;
use crate::loss::Loss;
use crate::network::Network;
use crate::tensor::Matrix;
use rayon::prelude::*;

/// ½ ln 2π.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// How a model's outputs map to targets in the original units.
#[derive(Clone, Copy, Debug)]
pub struct Outputs<'a> {
    pub loss: Loss,
    /// Targets per example (D).
    pub targets: usize,
    /// The scaling of the targets the network was trained on, if any.
    pub scale: Option<&'a Standardization>,
}

impl<'a> Outputs<'a> {
    /// The outputs of `net` trained with `loss` (D = outputs / 2 for the Gaussian NLL).
    pub fn of(net: &Network<f32>, loss: Loss, scale: Option<&'a Standardization>) -> Result<Self> {
        let per = loss.outputs_per_target();
        if !net.outputs().is_multiple_of(per) || !loss.is_regression() {
            return Err(Error::Config(format!(
                "a model trained with loss {} and {} outputs does not predict continuous targets",
                loss.name(),
                net.outputs()
            )));
        }
        let targets = net.outputs() / per;
        if let Some(s) = scale {
            s.validate(targets).map_err(|e| Error::Config(format!("the target standardisation: {e}")))?;
        }
        Ok(Self { loss, targets, scale })
    }

    pub fn heteroscedastic(&self) -> bool {
        self.loss == Loss::GaussianNll
    }

    /// The standard deviation of target `d` (1 when the targets were not standardised).
    fn std(&self, d: usize) -> f64 {
        self.scale.map_or(1.0, |s| s.std[d] as f64)
    }

    /// The mean of target `d` in the original units, from an output row.
    fn mean(&self, row: &[f32], d: usize) -> f64 {
        self.scale.map_or(row[d] as f64, |s| s.restore(d, row[d] as f64))
    }

    /// The predicted variance of target `d` in the original units (heteroscedastic outputs).
    fn variance(&self, row: &[f32], d: usize) -> f64 {
        (row[self.targets + d] as f64).exp() * self.std(d) * self.std(d)
    }
}

/// R3: the root mean squared error per target of the evaluation-mode predictions on `data`
/// (targets in the original units).
pub fn rmse(net: &mut Network<f32>, data: &Dataset, outputs: Outputs<'_>) -> Result<Vec<f64>> {
    let y = data.values()?;
    check_targets(y, outputs)?;
    let mut sum_sq = vec![0.0f64; outputs.targets];
    for_each_pass(net, &data.x, None, |start, out| {
        for r in 0..out.rows() {
            for (d, s) in sum_sq.iter_mut().enumerate() {
                let diff = y.get(start + r, d) as f64 - outputs.mean(out.row(r), d);
                *s += diff * diff;
            }
        }
    })?;
    Ok(sum_sq.iter().map(|s| (s / data.len() as f64).sqrt()).collect())
}

fn check_targets(y: &Matrix<f32>, outputs: Outputs<'_>) -> Result<()> {
    if y.cols() != outputs.targets {
        return Err(Error::Config(format!(
            "the data has {} target columns, the model predicts {}",
            y.cols(),
            outputs.targets
        )));
    }
    Ok(())
}

/// The predictive distribution of every example, from one evaluation pass or T Monte-Carlo samples.
#[derive(Clone, Debug)]
pub struct Predictive {
    /// Targets per example (D).
    pub targets: usize,
    /// Samples drawn (1 for an evaluation pass).
    pub samples: u32,
    /// Mean prediction per example and target (n × D, row-major), original units.
    pub mean: Vec<f64>,
    /// Variance of the samples' predictions (n × D; 0 for an evaluation pass).
    pub sample_var: Vec<f64>,
    /// Mean predicted variance (n × D) of a heteroscedastic model; empty otherwise.
    pub predicted_var: Vec<f64>,
    /// R4: the mean test log-likelihood per example for each observation precision asked for
    /// (homoscedastic), or the one value of a heteroscedastic model; empty without targets.
    pub log_likelihood: Vec<f64>,
    /// R4 per example: the log of its Monte-Carlo mixture density, `n × candidates` (row-major,
    /// one per precision asked for, or one); empty without targets.
    pub example_log_likelihood: Vec<f64>,
}

impl Predictive {
    /// The predictive standard deviation of example `i`, target `d`: the samples' variance plus the
    /// observation noise, 1/τ (homoscedastic, when τ is known) or the mean predicted variance.
    pub fn std(&self, i: usize, d: usize, tau: Option<f64>) -> f64 {
        let k = i * self.targets + d;
        let noise = match (self.predicted_var.get(k), tau) {
            (Some(&v), _) => v,
            (None, Some(tau)) => 1.0 / tau,
            (None, None) => 0.0,
        };
        (self.sample_var[k] + noise).sqrt()
    }

    /// R3 of the mean prediction per target against `y`.
    pub fn rmse(&self, y: &Matrix<f32>) -> Vec<f64> {
        let n = y.rows().max(1) as f64;
        (0..self.targets)
            .map(|d| {
                let sq: f64 =
                    (0..y.rows()).map(|i| (y.get(i, d) as f64 - self.mean[i * self.targets + d]).powi(2)).sum();
                (sq / n).sqrt()
            })
            .collect()
    }
}

/// Running sums of one example: Σ μ, Σ μ², Σ v per target, then (max, Σ e^(l − max)) of the
/// log-likelihood l for each precision (an online log-sum-exp).
struct Sums<'s> {
    mean: &'s mut [f64],
    square: &'s mut [f64],
    var: &'s mut [f64],
    lse: &'s mut [f64],
}

impl Sums<'_> {
    fn add_log_likelihood(&mut self, g: usize, l: f64) {
        let (max, sum) = (self.lse[2 * g], self.lse[2 * g + 1]);
        if l > max {
            self.lse[2 * g + 1] = sum * (max - l).exp() + 1.0;
            self.lse[2 * g] = l;
        } else {
            self.lse[2 * g + 1] = sum + (l - max).exp();
        }
    }
}

/// The predictive distribution of `x`'s examples: one `Eval` pass when `mc` is `None`, else `mc`
/// Monte-Carlo passes, masks addressed by example index so that the result does not depend on the
/// batch size or thread count. With targets `y` (original units) the mean log-likelihood is
/// computed for every precision of `taus` (homoscedastic; at least one) or once (heteroscedastic).
pub fn predictive(
    net: &mut Network<f32>,
    x: &Matrix<f32>,
    y: Option<&Matrix<f32>>,
    outputs: Outputs<'_>,
    mc: Option<u32>,
    taus: &[f64],
) -> Result<Predictive> {
    let (n, targets) = (x.rows(), outputs.targets);
    if let Some(y) = y {
        check_targets(y, outputs)?;
        if y.rows() != n {
            return Err(Error::Config(format!("{n} examples but {} target rows", y.rows())));
        }
        if !outputs.heteroscedastic() && taus.is_empty() {
            return Err(Error::Config("the log-likelihood needs an observation precision τ".into()));
        }
    }
    let candidates = match (y, outputs.heteroscedastic()) {
        (None, _) => 0,
        (Some(_), true) => 1,
        (Some(_), false) => taus.len(),
    };
    let stride = 3 * targets + 2 * candidates;
    let mut state = vec![0.0f64; n * stride];
    state.par_chunks_mut(stride.max(1)).for_each(|s| {
        s[3 * targets..].chunks_mut(2).for_each(|c| c[0] = f64::NEG_INFINITY);
    });
    let samples = mc.unwrap_or(1).max(1);
    for_each_pass(net, x, mc, |start, out| {
        let rows = state[start * stride..(start + out.rows()) * stride].par_chunks_mut(stride.max(1));
        rows.enumerate().with_min_len(64).for_each(|(r, s)| {
            let (mean, rest) = s.split_at_mut(targets);
            let (square, rest) = rest.split_at_mut(targets);
            let (var, lse) = rest.split_at_mut(targets);
            let mut sums = Sums { mean, square, var, lse };
            add_sample(&mut sums, out.row(r), y.map(|y| y.row(start + r)), outputs, taus);
        });
    })?;
    Ok(finish(&state, stride, n, samples, outputs, candidates))
}

/// One sample's prediction of one example into its sums.
fn add_sample(sums: &mut Sums<'_>, row: &[f32], y: Option<&[f32]>, outputs: Outputs<'_>, taus: &[f64]) {
    let targets = outputs.targets;
    let mut squared_error = 0.0;
    let mut hetero_ll = 0.0;
    for d in 0..targets {
        let mu = outputs.mean(row, d);
        sums.mean[d] += mu;
        sums.square[d] += mu * mu;
        let residual = y.map_or(0.0, |y| y[d] as f64 - mu);
        squared_error += residual * residual;
        if outputs.heteroscedastic() {
            let v = outputs.variance(row, d);
            sums.var[d] += v;
            // log N(y; μ, v) = −½ ln 2π − ½ ln v − (y − μ)² / 2v
            hetero_ll += -HALF_LN_2PI - 0.5 * v.ln() - residual * residual / (2.0 * v);
        }
    }
    if y.is_none() {
        return;
    }
    if outputs.heteroscedastic() {
        sums.add_log_likelihood(0, hetero_ll);
    } else {
        // Σ_d log N(y_d; μ_d, 1/τ) = D (½ ln τ − ½ ln 2π) − τ/2 Σ_d (y_d − μ_d)²
        for (g, &tau) in taus.iter().enumerate() {
            let l = targets as f64 * (0.5 * tau.ln() - HALF_LN_2PI) - 0.5 * tau * squared_error;
            sums.add_log_likelihood(g, l);
        }
    }
}

/// The means, variances and mean log-likelihoods of the sums.
fn finish(state: &[f64], stride: usize, n: usize, samples: u32, outputs: Outputs<'_>, candidates: usize) -> Predictive {
    let (targets, t) = (outputs.targets, samples as f64);
    let mut p = Predictive {
        targets,
        samples,
        mean: Vec::with_capacity(n * targets),
        sample_var: Vec::with_capacity(n * targets),
        predicted_var: Vec::new(),
        log_likelihood: vec![0.0; candidates],
        example_log_likelihood: Vec::with_capacity(n * candidates),
    };
    for s in state.chunks(stride.max(1)).take(n) {
        for d in 0..targets {
            let m = s[d] / t;
            p.mean.push(m);
            p.sample_var.push((s[targets + d] / t - m * m).max(0.0));
            if outputs.heteroscedastic() {
                p.predicted_var.push(s[2 * targets + d] / t);
            }
        }
        // R4: logsumexp_t(l_t) − ln T, the log of the mean of the samples' densities
        for (g, ll) in p.log_likelihood.iter_mut().enumerate() {
            let (max, sum) = (s[3 * targets + 2 * g], s[3 * targets + 2 * g + 1]);
            let example = max + sum.ln() - t.ln();
            p.example_log_likelihood.push(example);
            *ll += example / n as f64;
        }
    }
    p
}

/// Candidate precisions of [`choose_tau`]: 10^(g/20) / var for g in −20..=100, var the mean
/// variance of the validation targets (a model's residual variance lies below it, a τ above
/// 10^5/var would claim residuals 300 times smaller than the targets' spread).
fn tau_grid(y: &Matrix<f32>) -> Vec<f64> {
    let n = y.rows().max(1) as f64;
    let var: f64 = (0..y.cols())
        .map(|d| {
            let mean = (0..y.rows()).map(|i| y.get(i, d) as f64).sum::<f64>() / n;
            (0..y.rows()).map(|i| (y.get(i, d) as f64 - mean).powi(2)).sum::<f64>() / n
        })
        .sum::<f64>()
        / y.cols().max(1) as f64;
    let var = if var > 0.0 && var.is_finite() { var } else { 1.0 };
    (-20..=100).map(|g| 10f64.powf(g as f64 / 20.0) / var).collect()
}

/// R5: the observation precision τ (original units) that maximises the mean Monte-Carlo
/// log-likelihood of `val` over [`tau_grid`] (121 values, 12% apart), with `samples` samples.
pub fn choose_tau(net: &mut Network<f32>, val: &Dataset, outputs: Outputs<'_>, samples: u32) -> Result<f64> {
    let y = val.values()?;
    let taus = tau_grid(y);
    let p = predictive(net, &val.x, Some(y), outputs, Some(samples), &taus)?;
    let best = (0..taus.len()).max_by(|&a, &b| p.log_likelihood[a].total_cmp(&p.log_likelihood[b])).unwrap_or(0);
    Ok(taus[best])
}
