//! Concrete dropout (Gal, Hron & Kendall 2017): Bernoulli dropout on the input of a dense layer
//! or a convolution whose keep probabilities are trained (math.md N6). Keep `q[k] = σ(θ[k])` is
//! the sigmoid of a logit θ, one per unit of a vector or per channel of a feature map (or one for
//! the layer); in training the Bernoulli bit is replaced by its relaxation, which is
//! differentiable in θ. Written per unit (on a map k is the channel, and the sums over i run over
//! the positions too):
//!
//! ```text
//! train     z̃[i,k] = σ((θ[k] + L[i,k]) / t),   L = ln(u / (1 − u)),   u the unit's uniform
//!           a_tilde[i,k] = a[i,k] · z̃[i,k] / q[k]
//! backward  da[i,k] = da_tilde[i,k] · z̃[i,k] / q[k]
//!           dθ[k]  += Σ_i da_tilde[i,k] · a_tilde[i,k] · ((1 − z̃[i,k]) / t − (1 − q[k]))
//! MC        a_tilde[i,k] = r[i,k] / q[k] · a[i,k],   r ~ Bernoulli(q[k])   (inverted dropout)
//! eval      a_tilde = a
//! ```
//!
//! u is `unit_open` of the Philox word of the unit's Bernoulli address (`docs/masks.md`,
//! "Concrete dropout"). Monte-Carlo prediction samples hard Bernoulli masks at the learned keep,
//! by the Bernoulli rule of the same address: the relaxation is only a way of giving the training
//! objective a gradient in θ, and the distribution it stands for is Bernoulli(q).
//!
//! The regulariser on this layer (math.md N6), with `c_w = l²/(2κN)`, `c_e = 1/(κN)` (κ turns the
//! loss into the mean negative log-likelihood of an example, [`super::likelihood_scale`]) and `S[k] =
//! Σ_j W[j,k]²` over the weights the noise feeds:
//!
//! ```text
//! R      = c_w · Σ_k S[k] / q[k]  +  c_e · Σ_k (q[k] ln q[k] + (1 − q[k]) ln(1 − q[k]))
//! dW[j,k] += 2 c_w · W[j,k] / q[k]
//! dθ[k]   += −c_w · S[k] · (1 − q[k]) / q[k]  +  c_e · θ[k] · q[k] · (1 − q[k])
//! ```
//!
//! (per layer: one θ, the sums over k of the per-unit terms). The bits of the last pass (z̃, or r
//! in a Monte-Carlo pass) are stored for backward: 4 bytes per unit (per channel of a map) in f32.

use super::concrete_prior::ConcreteRegularizer;
use super::MaskDraw;
use crate::error::{Error, Result};
use crate::rng::{counter, key, philox4x32_10, unit_open, Stream};
use crate::tensor::{Matrix, Scalar};
use rayon::prelude::*;

/// Rows drawn per parallel task at least.
const MIN_ROWS_PER_TASK: usize = 8;

/// The learned keep of one concrete dropout, summarised (the per-epoch log's `keep`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeepSummary {
    /// The module number of the dense layer or convolution the noise feeds (N of `N.keep_logit`).
    pub layer: usize,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl KeepSummary {
    pub fn of(layer: usize, keep: &[f64]) -> Self {
        let mean = keep.iter().sum::<f64>() / keep.len().max(1) as f64;
        let min = keep.iter().copied().fold(f64::INFINITY, f64::min);
        let max = keep.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Self { layer, mean, min, max }
    }
}

/// The relaxed bit `z̃` for keep logit `theta`, temperature `t` and the 32 random bits `word`
/// of the unit's address.
pub fn relaxed_bit(theta: f64, temperature: f64, word: u32) -> f64 {
    let u = unit_open(word);
    // one logarithm: u/(1 − u) is one rounding, a second ln would cost as much as the rest
    let logistic = (u / (1.0 - u)).ln();
    sigmoid((theta + logistic) / temperature)
}

/// The smallest word from which [`relaxed_bit`] rounds to exactly 1 in T, for sure: a shortcut
/// that gives the rule's own bits (`u64::MAX` when T keeps σ(18) apart from 1, as f64 does).
///
/// σ(x) rounds to 1 in f32 for every x ≥ 18 (1 − σ(18) ≈ 1.5e-8, under half an ulp below 1, and
/// σ, exp and the division are monotone). A word w gives u = (w + 0.5)/2^32, and u ≥ σ(18.5·t − θ)
/// makes x = (θ + ln(u/(1 − u)))/t ≥ 18.5; the margins (0.5 in x, 1e-9 in u) are far wider than
/// the double-precision rounding of x.
fn certain_one<T: Scalar>(theta: f64, temperature: f64) -> u64 {
    if T::from_f64(sigmoid(18.0)) != T::ONE {
        return u64::MAX;
    }
    let u = sigmoid(18.5 * temperature - theta) + 1e-9;
    if u >= 1.0 || u.is_nan() {
        return u64::MAX;
    }
    (u * 4_294_967_296.0 - 0.5).ceil().max(0.0) as u64
}

/// θ of group g: its own logit, or the layer's one.
fn theta<T: Scalar>(logit: &[T], g: usize) -> f64 {
    logit[if logit.len() == 1 { 0 } else { g }].to_f64()
}

/// σ in the form docs/masks.md writes the rule (and its Python reference computes), not
/// `activation::sigmoid`'s overflow-safe split, which rounds differently for x < 0: the bits and
/// the keep must be reproducible from the documented formula.
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The logit of a keep probability, `ln(q / (1 − q))`.
pub fn logit(keep: f64) -> f64 {
    (keep / (1.0 - keep)).ln()
}

/// Concrete dropout on an input of `units` units in `groups` groups, unit k in group `k mod
/// groups`: every unit its own group on a vector, every channel one on a channels-last feature
/// map (a relaxed bit per example and channel, shared by its positions, as spatial dropout). Its
/// keep logits (one per group, or one for the layer) and their gradient, and the bits of its last
/// pass.
#[derive(Clone, Debug)]
pub struct ConcreteDropout<T: Scalar> {
    /// θ: one per group, or one for the layer.
    pub logit: Vec<T>,
    /// ∂J/∂θ, filled by backward.
    pub logit_grad: Vec<T>,
    units: usize,
    groups: usize,
    temperature: f64,
    regularizer: ConcreteRegularizer,
    /// z̃ (training) or r (Monte-Carlo) of the last pass, `rows × groups`.
    bits: Matrix<T>,
    /// q[g] of the last pass.
    keep: Vec<f64>,
    /// 1/q[g] of the last pass.
    inv_keep: Vec<T>,
    /// 2·c_w/q[g] of the last pass: the regulariser's decay of the weights group g feeds.
    decay: Vec<T>,
    /// The Bernoulli threshold of q[g] and the word from which z̃ is 1 in T ([`certain_one`]), of
    /// the last pass, for the draw.
    thresholds: Vec<u64>,
    ones: Vec<u64>,
    /// Backward's workspaces: dθ per group, and S[g] of the weights.
    grad: Vec<f64>,
    squares: Vec<f64>,
    /// What the last pass did.
    last: Pass,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Pass {
    Identity,
    Relaxed,
    Bernoulli,
}

impl<T: Scalar> ConcreteDropout<T> {
    /// Keep logits starting at `keep` (one value, or one per group) on `units` units in `groups`
    /// groups.
    pub fn new(keep: &[f64], units: usize, groups: usize, temperature: f64, per_layer: bool) -> Result<Self> {
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(Error::Config(format!("concrete temperature {temperature} must be positive and finite")));
        }
        if groups == 0 || !units.is_multiple_of(groups) {
            return Err(Error::Config(format!("concrete dropout: {units} units do not split into {groups} groups")));
        }
        let starts: Vec<f64> = match (keep, per_layer) {
            ([p], true) => vec![*p],
            (_, true) => return Err(Error::Config("per-layer concrete dropout takes one keep probability".into())),
            ([p], false) => vec![*p; groups],
            (all, false) if all.len() == groups => all.to_vec(),
            (all, false) => {
                let what = if groups == units { "unit" } else { "channel (one keep per channel of a feature map)" };
                return Err(Error::Config(format!(
                    "{} keep values for {groups} groups: give one or one per {what}",
                    all.len()
                )));
            }
        };
        for &p in &starts {
            // written so that NaN fails too; a logit needs q strictly inside (0, 1)
            if !(p > 0.0 && p < 1.0) {
                return Err(Error::Config(format!("concrete keep {p} must lie strictly between 0 and 1")));
            }
        }
        let logit: Vec<T> = starts.iter().map(|&p| T::from_f64(logit(p))).collect();
        Ok(Self {
            logit_grad: vec![T::ZERO; logit.len()],
            logit,
            units,
            groups,
            temperature,
            regularizer: ConcreteRegularizer::default(),
            bits: Matrix::zeros(0, 0),
            keep: Vec::new(),
            inv_keep: Vec::new(),
            decay: Vec::new(),
            thresholds: Vec::new(),
            ones: Vec::new(),
            grad: Vec::new(),
            squares: Vec::new(),
            last: Pass::Identity,
        })
    }

    /// z̃ of the last training pass, or r of the last Monte-Carlo pass (`rows × groups`).
    pub fn bits(&self) -> &Matrix<T> {
        &self.bits
    }

    pub fn set_regularizer(&mut self, regularizer: ConcreteRegularizer) {
        self.regularizer = regularizer;
    }

    /// The current keep probability of each group, σ(θ).
    pub fn keep_values(&self) -> Vec<f64> {
        let mut keep = Vec::new();
        self.keep_into(&mut keep);
        keep
    }

    /// σ(θ) per group into `keep` (its allocation reused).
    fn keep_into(&self, keep: &mut Vec<f64>) {
        keep.clear();
        keep.extend((0..self.groups).map(|g| sigmoid(theta(&self.logit, g))));
    }

    /// The forward pass: relaxed bits in training (`stream` Mask), hard Bernoulli bits at the
    /// learned keep in Monte-Carlo passes (`stream` McMask), the identity in evaluation.
    pub fn forward(&mut self, a: &Matrix<T>, a_tilde: &mut Matrix<T>, draw: Option<&MaskDraw>) -> Result<()> {
        let (rows, cols) = a.shape();
        if cols != self.units {
            return Err(crate::error::shape(
                "concrete dropout",
                format!("input has {cols} units, the noise takes {}", self.units),
            ));
        }
        a_tilde.ensure_shape(rows, cols);
        // the buffers of the last pass are reused: a steady training step allocates nothing
        let mut keep = std::mem::take(&mut self.keep);
        self.keep_into(&mut keep);
        self.keep = keep;
        self.inv_keep.clear();
        self.inv_keep.extend(self.keep.iter().map(|&q| T::from_f64(1.0 / q)));
        let cw = self.regularizer.weight;
        self.decay.clear();
        self.decay.extend(self.keep.iter().map(|&q| T::from_f64(2.0 * cw / q)));
        let Some(draw) = draw else {
            self.last = Pass::Identity;
            a_tilde.as_mut_slice().copy_from_slice(a.as_slice());
            return Ok(());
        };
        if draw.stream == Stream::McMask {
            if let Some(&q) = self.keep.iter().find(|&&q| q <= 0.0 || q.is_nan()) {
                return Err(Error::Config(format!("concrete dropout's learned keep reached {q}")));
            }
            self.last = Pass::Bernoulli;
        } else {
            self.last = Pass::Relaxed;
        }
        self.draw_bits(rows, draw);
        // a_tilde[i,k] = a[i,k] · z̃[i,g] / q[g], g = k mod groups (N6)
        let (bits, inv, groups) = (&self.bits, &self.inv_keep, self.groups);
        let width = cols.max(1);
        let out = a_tilde.as_mut_slice().par_chunks_mut(width).zip(a.as_slice().par_chunks(width));
        out.zip(bits.as_slice().par_chunks(groups)).with_min_len(MIN_ROWS_PER_TASK).for_each(|((o, x), z)| {
            for (o, x) in o.chunks_mut(groups).zip(x.chunks(groups)) {
                for g in 0..o.len() {
                    o[g] = x[g] * z[g] * inv[g];
                }
            }
        });
        Ok(())
    }

    /// The bits of `rows` rows, rows in parallel: z̃ of the unit's word in training, or its
    /// Bernoulli bit at the learned keep in a Monte-Carlo pass (docs/masks.md).
    fn draw_bits(&mut self, rows: usize, draw: &MaskDraw) {
        let groups = self.groups;
        self.bits.ensure_shape(rows, groups);
        let philox_key = key(draw.seed);
        let (t, hard) = (self.temperature, self.last == Pass::Bernoulli);
        let logit = &self.logit[..];
        self.thresholds.clear();
        self.thresholds.extend(self.keep.iter().map(|&q| super::threshold(q)));
        self.ones.clear();
        self.ones.extend((0..groups).map(|g| certain_one::<T>(theta(logit, g), t)));
        let (thresholds, ones) = (&self.thresholds, &self.ones);
        self.bits.as_mut_slice().par_chunks_mut(groups).enumerate().with_min_len(MIN_ROWS_PER_TASK).for_each(
            |(i, row)| {
                let r = draw.first_row.wrapping_add(i as u32);
                for (block, bits) in row.chunks_mut(4).enumerate() {
                    let words = philox4x32_10(counter(draw.stream, draw.layer, draw.step, r, block as u32), philox_key);
                    for (lane, z) in bits.iter_mut().enumerate() {
                        let g = block * 4 + lane;
                        *z = if hard {
                            if (words[lane] as u64) < thresholds[g] {
                                T::ONE
                            } else {
                                T::ZERO
                            }
                        } else if words[lane] as u64 >= ones[g] {
                            // the rule's value, without its logarithm and exponential
                            T::ONE
                        } else {
                            T::from_f64(relaxed_bit(theta(logit, g), t, words[lane]))
                        };
                    }
                }
            },
        );
    }

    /// The backward pass of the last forward pass, in place on `d`: on entry ∂J/∂a_tilde, on exit
    /// ∂J/∂a (when `input_grad`; otherwise left as it was). Sets `logit_grad` from the data term
    /// and adds the regulariser's terms for the weights `w` the noise feeds (column c of w fed by
    /// group `c mod groups`).
    pub fn backward_in_place(&mut self, d: &mut Matrix<T>, a_tilde: &Matrix<T>, w: &Matrix<T>, input_grad: bool) {
        let groups = self.groups;
        let mut grad = std::mem::take(&mut self.grad);
        grad.clear();
        grad.resize(groups, 0.0);
        if self.last == Pass::Relaxed {
            // dθ[g] = Σ_i Σ_{k ≡ g} da_tilde[i,k] · a_tilde[i,k] · ((1 − z̃[i,g])/t − (1 − q[g]))
            // (N6), blocks of groups in parallel, each summed in row and position order
            let (z, keep, t) = (&self.bits, &self.keep, self.temperature);
            let positions = self.units / groups;
            grad.par_chunks_mut(64).enumerate().for_each(|(block, sums)| {
                let start = block * 64;
                let width = sums.len();
                let q = &keep[start..start + width];
                for i in 0..d.rows() {
                    let (dr, ar, zr) = (d.row(i), a_tilde.row(i), &z.row(i)[start..start + width]);
                    for p in 0..positions {
                        let at = p * groups + start;
                        let (dp, ap) = (&dr[at..at + width], &ar[at..at + width]);
                        for ((((s, &dv), &av), &zv), &q) in sums.iter_mut().zip(dp).zip(ap).zip(zr).zip(q) {
                            *s += dv.to_f64() * av.to_f64() * ((1.0 - zv.to_f64()) / t - (1.0 - q));
                        }
                    }
                }
            });
        }
        self.add_regularizer_grad(&mut grad, w);
        let shared = self.logit.len() == 1;
        for g in self.logit_grad.iter_mut() {
            *g = T::ZERO;
        }
        for (g, v) in grad.iter().enumerate() {
            self.logit_grad[if shared { 0 } else { g }] += T::from_f64(*v);
        }
        self.grad = grad;
        if !input_grad || self.last == Pass::Identity {
            return;
        }
        // da[i,k] = da_tilde[i,k] · z̃[i,g] / q[g] (training) or · r[i,g] / q[g] (MC)
        let (bits, inv) = (&self.bits, &self.inv_keep);
        let rows = d.as_mut_slice().par_chunks_mut(self.units.max(1)).zip(bits.as_slice().par_chunks(groups));
        rows.with_min_len(MIN_ROWS_PER_TASK).for_each(|(dr, z)| {
            for dp in dr.chunks_mut(groups) {
                for g in 0..dp.len() {
                    dp[g] = dp[g] * z[g] * inv[g];
                }
            }
        });
    }

    /// Adds the regulariser's ∂R/∂θ (per group) to `grad` (N6).
    fn add_regularizer_grad(&mut self, grad: &mut [f64], w: &Matrix<T>) {
        let ConcreteRegularizer { weight: cw, entropy: ce } = self.regularizer;
        if cw == 0.0 && ce == 0.0 {
            return;
        }
        column_squares(w, self.groups, &mut self.squares);
        for (g, v) in grad.iter_mut().enumerate() {
            let q = self.keep[g];
            *v += -cw * self.squares[g] * (1.0 - q) / q + ce * theta(&self.logit, g) * q * (1.0 - q);
        }
    }

    /// `2 c_w / q[g]` per group: the regulariser's weight decay on the weight columns group g
    /// feeds (`None` without a weight term). Valid after a forward pass.
    pub fn weight_decay(&self) -> Option<&[T]> {
        (self.regularizer.weight != 0.0).then_some(&self.decay[..])
    }

    /// R of math.md N6 at the current keep and weights `w`.
    pub fn regularizer_value(&self, w: &Matrix<T>) -> f64 {
        let ConcreteRegularizer { weight: cw, entropy: ce } = self.regularizer;
        let mut squares = Vec::new();
        column_squares(w, self.groups, &mut squares);
        self.keep_values()
            .iter()
            .zip(&squares)
            .map(|(&q, &s)| cw * s / q + ce * (q * q.ln() + (1.0 - q) * (1.0 - q).ln()))
            .sum()
    }
}

/// `S[g] = Σ_j Σ_{c ≡ g mod groups} w[j,c]²` into `squares`: blocks of groups in parallel, each
/// summed in the order of the rows and of the columns within a row.
fn column_squares<T: Scalar>(w: &Matrix<T>, groups: usize, squares: &mut Vec<f64>) {
    squares.clear();
    squares.resize(groups, 0.0);
    squares.par_chunks_mut(64).enumerate().for_each(|(block, sums)| {
        let start = block * 64;
        for j in 0..w.rows() {
            for columns in w.row(j).chunks(groups) {
                let end = columns.len().min(start + sums.len());
                for (s, v) in sums.iter_mut().zip(columns.get(start..end).unwrap_or(&[])) {
                    *s += v.to_f64() * v.to_f64();
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relaxed_bits_have_the_mean_of_their_distribution() {
        // E[z̃] = ∫₀¹ σ((θ + ln u − ln(1−u))/t) du, by the midpoint rule on 10^6 points
        let (keep, t) = (0.7, 0.1);
        let theta = logit(keep);
        let points = 1_000_000;
        let expected: f64 = (0..points)
            .map(|i| {
                let u = (i as f64 + 0.5) / points as f64;
                sigmoid((theta + (u / (1.0 - u)).ln()) / t)
            })
            .sum::<f64>()
            / points as f64;
        let mut d = ConcreteDropout::<f64>::new(&[keep], 100, 100, t, false).unwrap();
        let ones = Matrix::from_fn(500, 100, |_, _| 1.0);
        let mut out = Matrix::zeros(0, 0);
        let draw = MaskDraw { seed: 9, stream: Stream::Mask, layer: 0, step: 3, first_row: 0 };
        d.forward(&ones, &mut out, Some(&draw)).unwrap();
        let z: Vec<f64> = d.bits.as_slice().to_vec();
        let n = z.len() as f64;
        let mean = z.iter().sum::<f64>() / n;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        // the sample mean of 5·10^4 draws: within 4 standard errors √(var/n)
        assert!((mean - expected).abs() < 4.0 * (var / n).sqrt(), "mean {mean}, expected {expected}");
        // at t = 0.1 most bits are near 0 or 1: the relaxation is close to Bernoulli(keep)
        assert!((expected - keep).abs() < 0.05, "{expected}");
        // a_tilde = a · z̃ / q
        assert!((out.get(3, 4) - d.bits.get(3, 4) / keep).abs() < 1e-12);
        // evaluation is the identity
        d.forward(&ones, &mut out, None).unwrap();
        assert_eq!(out.as_slice(), ones.as_slice());
    }

    #[test]
    fn monte_carlo_passes_draw_hard_bits_at_the_learned_keep() {
        let mut d = ConcreteDropout::<f64>::new(&[0.6], 8, 8, 0.1, true).unwrap();
        let x = Matrix::from_fn(5, 8, |_, _| 1.0);
        let mut out = Matrix::zeros(0, 0);
        let draw = MaskDraw { seed: 4, stream: Stream::McMask, layer: 1, step: 2, first_row: 10 };
        d.forward(&x, &mut out, Some(&draw)).unwrap();
        let keep = d.keep_values()[0];
        assert!((keep - 0.6).abs() < 1e-12);
        for i in 0..5 {
            for k in 0..8 {
                let bit = crate::dropout::mask_bit(&draw, 10 + i as u32, k as u32, keep);
                assert_eq!(out.get(i, k), if bit { 1.0 / keep } else { 0.0 }, "({i}, {k})");
            }
        }
    }

    #[test]
    fn on_a_feature_map_each_example_and_channel_has_one_bit() {
        // 2 channels, 3 positions (channels last): unit k belongs to channel k mod 2
        let mut d = ConcreteDropout::<f64>::new(&[0.6, 0.8], 6, 2, 0.5, false).unwrap();
        let x = Matrix::from_fn(4, 6, |i, k| 1.0 + (i * 6 + k) as f64);
        let mut out = Matrix::zeros(0, 0);
        let draw = MaskDraw { seed: 2, stream: Stream::Mask, layer: 0, step: 1, first_row: 0 };
        d.forward(&x, &mut out, Some(&draw)).unwrap();
        assert_eq!(d.bits().shape(), (4, 2));
        for i in 0..4 {
            for k in 0..6 {
                let c = k % 2;
                let expected = x.get(i, k) * d.bits().get(i, c) / [0.6, 0.8][c];
                assert!((out.get(i, k) - expected).abs() < 1e-12, "({i}, {k})");
            }
        }
        let err = ConcreteDropout::<f64>::new(&[0.5; 6], 6, 2, 0.1, false).unwrap_err().to_string();
        assert!(err.contains("one per channel"), "{err}");
    }

    #[test]
    fn the_shortcut_to_one_gives_the_rule_s_bits() {
        // f64 keeps σ(18) apart from 1: no shortcut; in f32 at keep 0.9, t = 0.1 most words take it
        assert_eq!(certain_one::<f64>(0.0, 0.1), u64::MAX);
        assert!(certain_one::<f32>(logit(0.9), 0.1) < 1 << 31);
        let mut rng = crate::rng::StreamRng::new(3, Stream::Gradcheck, 0, 0);
        for t in [0.01, 0.05, 0.1, 0.5, 1.0, 3.0] {
            for _ in 0..40 {
                let theta = 8.0 * rng.uniform() - 4.0;
                let from = certain_one::<f32>(theta, t);
                let near = (0..2000u64).map(|d| from.saturating_add(d));
                let spread = (0..2000).map(|_| rng.next_u32() as u64);
                for w in near.chain(spread).filter(|&w| w >= from && w <= u32::MAX as u64) {
                    assert_eq!(relaxed_bit(theta, t, w as u32) as f32, 1.0, "θ {theta}, t {t}, word {w}");
                }
            }
        }
    }

    #[test]
    fn starting_keep_is_checked() {
        assert!(ConcreteDropout::<f64>::new(&[1.0], 3, 3, 0.1, false).unwrap_err().to_string().contains("strictly"));
        assert!(ConcreteDropout::<f64>::new(&[0.5, 0.6], 3, 3, 0.1, false).is_err());
        assert!(ConcreteDropout::<f64>::new(&[0.5], 3, 3, 0.0, false).unwrap_err().to_string().contains("temperature"));
    }
}
