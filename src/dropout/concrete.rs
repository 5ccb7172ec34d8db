//! Concrete dropout (Gal, Hron & Kendall 2017): Bernoulli dropout on a dense layer's input whose
//! keep probabilities are trained (math.md N6). Keep `q[k] = σ(θ[k])` is the sigmoid of a logit
//! θ, one per unit (or one for the layer); in training the Bernoulli bit is replaced by its
//! relaxation, which is differentiable in θ:
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
//! The regulariser on this layer (math.md N6), with `c_w = l²/N`, `c_e = 2/(τN)` and `S[k] =
//! Σ_j W[j,k]²` over the weights the noise feeds:
//!
//! ```text
//! R      = c_w · Σ_k S[k] / q[k]  +  c_e · Σ_k (q[k] ln q[k] + (1 − q[k]) ln(1 − q[k]))
//! dW[j,k] += 2 c_w · W[j,k] / q[k]
//! dθ[k]   += −c_w · S[k] · (1 − q[k]) / q[k]  +  c_e · θ[k] · q[k] · (1 − q[k])
//! ```
//!
//! (per layer: one θ, the sums over k of the per-unit terms). The relaxed bits z̃ of the last
//! training pass are stored for backward (4 bytes per unit in f32).

use super::{Dropout, Keep, MaskDraw, Scaling};
use crate::error::{Error, Result};
use crate::rng::{counter, key, philox4x32_10, unit_open, Stream};
use crate::tensor::{Matrix, Scalar};
use rayon::prelude::*;

/// Rows drawn per parallel task at least.
const MIN_ROWS_PER_TASK: usize = 8;

/// The coefficients of the concrete regulariser: `c_w = l²/N` on the weight term and
/// `c_e = 2/(τN)` on the entropy term (0 and 0: no regulariser).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ConcreteRegularizer {
    pub weight: f64,
    pub entropy: f64,
}

impl ConcreteRegularizer {
    /// The coefficients for length-scale `l`, `examples` training examples and precision `tau`.
    pub fn new(lengthscale: f64, examples: usize, tau: f64) -> Self {
        let n = examples.max(1) as f64;
        Self { weight: lengthscale * lengthscale / n, entropy: 2.0 / (tau * n) }
    }
}

/// The prior behind a run's concrete regulariser: the length-scale `l` and the observation
/// precision τ (in the targets' original units; `None`: 1, as for classification). Stored in a
/// run's training state.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcretePrior {
    pub lengthscale: f64,
    pub tau: Option<f64>,
}

impl ConcretePrior {
    /// The default length-scale, the one `dropnet uci` uses too.
    pub const LENGTHSCALE: f64 = 1e-2;

    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if !positive(self.lengthscale) || self.tau.is_some_and(|t| !positive(t)) {
            return Err(format!("the concrete prior {self:?} needs a positive, finite length-scale and τ"));
        }
        Ok(())
    }

    /// The coefficients for `examples` training examples. τ is the precision of the outputs the
    /// network is trained on: with targets standardised to deviations σ_d, τ·mean(σ_d²).
    pub fn regularizer(&self, examples: usize, target_variances: Option<&[f64]>) -> ConcreteRegularizer {
        let scale = target_variances.filter(|v| !v.is_empty()).map_or(1.0, |v| v.iter().sum::<f64>() / v.len() as f64);
        ConcreteRegularizer::new(self.lengthscale, examples, self.tau.map_or(1.0, |t| t * scale))
    }
}

impl Default for ConcretePrior {
    fn default() -> Self {
        Self { lengthscale: Self::LENGTHSCALE, tau: None }
    }
}

/// The learned keep of one concrete dropout, summarised (the per-epoch log's `keep`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeepSummary {
    /// The module number of the dense layer the noise feeds (N of `N.keep_logit`).
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

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The logit of a keep probability, `ln(q / (1 − q))`.
pub fn logit(keep: f64) -> f64 {
    (keep / (1.0 - keep)).ln()
}

/// Concrete dropout on an input of `units` units: its keep logits and their gradient, and the
/// relaxed bits of its last training pass.
#[derive(Clone, Debug)]
pub struct ConcreteDropout<T: Scalar> {
    /// θ: one per unit, or one for the layer.
    pub logit: Vec<T>,
    /// ∂J/∂θ, filled by backward.
    pub logit_grad: Vec<T>,
    units: usize,
    temperature: f64,
    regularizer: ConcreteRegularizer,
    /// z̃ of the last training pass (`rows × units`).
    relaxed: Matrix<T>,
    /// q[k] of the last pass, per unit.
    keep: Vec<f64>,
    /// 1/q[k] of the last pass.
    inv_keep: Vec<T>,
    /// 2·c_w/q[k] of the last pass: the regulariser's decay of weight column k.
    decay: Vec<T>,
    /// Backward's workspaces: dθ per unit, and S[k] of the weights.
    grad: Vec<f64>,
    squares: Vec<f64>,
    /// The hard Bernoulli dropout of Monte-Carlo passes, at the keep it was built for.
    bernoulli: Option<Dropout<T>>,
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
    /// Keep logits starting at `keep` (one value, or one per unit) on `units` units.
    pub fn new(keep: &[f64], units: usize, temperature: f64, per_layer: bool) -> Result<Self> {
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(Error::Config(format!("concrete temperature {temperature} must be positive and finite")));
        }
        let starts: Vec<f64> = match (keep, per_layer) {
            ([p], true) => vec![*p],
            (_, true) => return Err(Error::Config("per-layer concrete dropout takes one keep probability".into())),
            ([p], false) => vec![*p; units],
            (all, false) if all.len() == units => all.to_vec(),
            (all, false) => {
                return Err(Error::Config(format!(
                    "{} keep values for {units} units: give one or one per unit",
                    all.len()
                )))
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
            temperature,
            regularizer: ConcreteRegularizer::default(),
            relaxed: Matrix::zeros(0, 0),
            keep: Vec::new(),
            inv_keep: Vec::new(),
            decay: Vec::new(),
            grad: Vec::new(),
            squares: Vec::new(),
            bernoulli: None,
            last: Pass::Identity,
        })
    }

    /// z̃ of the last training pass (`rows × units`).
    pub fn relaxed(&self) -> &Matrix<T> {
        &self.relaxed
    }

    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    pub fn set_regularizer(&mut self, regularizer: ConcreteRegularizer) {
        self.regularizer = regularizer;
    }

    pub fn regularizer(&self) -> ConcreteRegularizer {
        self.regularizer
    }

    /// Whether one keep probability is learned for the whole layer.
    pub fn per_layer(&self) -> bool {
        self.logit.len() == 1 && self.units != 1
    }

    /// The current keep probability of each unit, σ(θ).
    pub fn keep_values(&self) -> Vec<f64> {
        let mut keep = Vec::new();
        self.keep_into(&mut keep);
        keep
    }

    /// σ(θ) per unit into `keep` (its allocation reused).
    fn keep_into(&self, keep: &mut Vec<f64>) {
        let theta = |k: usize| self.logit[if self.logit.len() == 1 { 0 } else { k }].to_f64();
        keep.clear();
        keep.extend((0..self.units).map(|k| sigmoid(theta(k))));
    }

    /// The current keep probabilities as a [`Keep`] (an error when one has reached 0).
    pub fn keep(&self) -> Result<Keep> {
        Keep::per_unit(self.keep_values())
            .map_err(|e| Error::Config(format!("concrete dropout's learned keep left (0, 1]: {e}")))
    }

    /// The forward pass: relaxed bits in training (`stream` Mask), hard Bernoulli bits at the
    /// learned keep in Monte-Carlo passes (`stream` McMask), the identity in evaluation.
    pub fn forward(&mut self, a: &Matrix<T>, a_tilde: &mut Matrix<T>, draw: Option<&MaskDraw>) -> Result<()> {
        let (rows, cols) = a.shape();
        if cols != self.units {
            return Err(crate::error::shape(
                "concrete dropout",
                format!("input has {cols} units, keep has {}", self.units),
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
        match draw {
            None => {
                self.last = Pass::Identity;
                a_tilde.as_mut_slice().copy_from_slice(a.as_slice());
                Ok(())
            }
            Some(d) if d.stream == Stream::McMask => {
                self.last = Pass::Bernoulli;
                let keep = self.keep()?;
                if self.bernoulli.as_ref().is_none_or(|b| b.keep() != &keep) {
                    self.bernoulli = Some(Dropout::new(keep, Scaling::Inverted));
                }
                self.bernoulli.as_mut().expect("set above").forward(a, a_tilde, Some(d))
            }
            Some(d) => {
                self.last = Pass::Relaxed;
                self.draw_relaxed(rows, d);
                let (z, inv) = (&self.relaxed, &self.inv_keep);
                let out = a_tilde.as_mut_slice().par_chunks_mut(cols.max(1)).zip(a.as_slice().par_chunks(cols.max(1)));
                out.zip(z.as_slice().par_chunks(cols.max(1))).with_min_len(MIN_ROWS_PER_TASK).for_each(
                    |((o, x), z)| {
                        for k in 0..o.len() {
                            o[k] = x[k] * z[k] * inv[k];
                        }
                    },
                );
                Ok(())
            }
        }
    }

    /// z̃ for `rows` rows, rows in parallel.
    fn draw_relaxed(&mut self, rows: usize, draw: &MaskDraw) {
        let cols = self.units;
        self.relaxed.ensure_shape(rows, cols);
        if cols == 0 {
            return;
        }
        let philox_key = key(draw.seed);
        let (logit, t) = (&self.logit, self.temperature);
        let shared = logit.len() == 1;
        self.relaxed.as_mut_slice().par_chunks_mut(cols).enumerate().with_min_len(MIN_ROWS_PER_TASK).for_each(
            |(i, row)| {
                let r = draw.first_row.wrapping_add(i as u32);
                for (block, units) in row.chunks_mut(4).enumerate() {
                    let words = philox4x32_10(counter(draw.stream, draw.layer, draw.step, r, block as u32), philox_key);
                    for (lane, z) in units.iter_mut().enumerate() {
                        let k = block * 4 + lane;
                        let theta = logit[if shared { 0 } else { k }].to_f64();
                        *z = T::from_f64(relaxed_bit(theta, t, words[lane]));
                    }
                }
            },
        );
    }

    /// The backward pass of the last forward pass, in place on `d`: on entry ∂J/∂a_tilde, on exit
    /// ∂J/∂a (when `input_grad`; otherwise left as it was). Sets `logit_grad` from the data term
    /// and adds the regulariser's terms for the weights `w` the noise feeds ([out, units]).
    pub fn backward_in_place(&mut self, d: &mut Matrix<T>, a_tilde: &Matrix<T>, w: &Matrix<T>, input_grad: bool) {
        let cols = self.units;
        let mut grad = std::mem::take(&mut self.grad);
        grad.clear();
        grad.resize(cols, 0.0);
        if self.last == Pass::Relaxed {
            // dθ[k] = Σ_i da_tilde[i,k] · a_tilde[i,k] · ((1 − z̃[i,k])/t − (1 − q[k]))  (N6),
            // column blocks in parallel, each column summed in row order
            let (z, keep, t) = (&self.relaxed, &self.keep, self.temperature);
            grad.par_chunks_mut(64).enumerate().for_each(|(block, g)| {
                let start = block * 64;
                for i in 0..d.rows() {
                    let (dr, ar, zr) = (&d.row(i)[start..], &a_tilde.row(i)[start..], &z.row(i)[start..]);
                    for (j, g) in g.iter_mut().enumerate() {
                        let zk = zr[j].to_f64();
                        *g += dr[j].to_f64() * ar[j].to_f64() * ((1.0 - zk) / t - (1.0 - keep[start + j]));
                    }
                }
            });
        }
        self.add_regularizer_grad(&mut grad, w);
        let shared = self.logit.len() == 1;
        for g in self.logit_grad.iter_mut() {
            *g = T::ZERO;
        }
        for (k, g) in grad.iter().enumerate() {
            self.logit_grad[if shared { 0 } else { k }] += T::from_f64(*g);
        }
        self.grad = grad;
        if !input_grad {
            return;
        }
        // da[i,k] = da_tilde[i,k] · z̃[i,k] / q[k] (training), r[i,k] / q[k] (MC), or da_tilde
        match self.last {
            Pass::Identity => {}
            Pass::Bernoulli => {
                let (rows, ld) = d.shape();
                let bernoulli = self.bernoulli.as_ref().expect("a Monte-Carlo pass");
                // SAFETY: the whole of d, row stride ld, borrowed mutably here.
                unsafe { bernoulli.backward_block_in_place(0..rows, 0..ld, d.as_mut_slice().as_mut_ptr(), ld) };
            }
            Pass::Relaxed => {
                let (z, inv) = (&self.relaxed, &self.inv_keep);
                let rows = d.as_mut_slice().par_chunks_mut(cols.max(1)).zip(z.as_slice().par_chunks(cols.max(1)));
                rows.with_min_len(MIN_ROWS_PER_TASK).for_each(|(dr, zr)| {
                    for k in 0..dr.len() {
                        dr[k] = dr[k] * zr[k] * inv[k];
                    }
                });
            }
        }
    }

    /// Adds the regulariser's ∂R/∂θ (per unit) to `grad` (N6).
    fn add_regularizer_grad(&mut self, grad: &mut [f64], w: &Matrix<T>) {
        let ConcreteRegularizer { weight: cw, entropy: ce } = self.regularizer;
        if cw == 0.0 && ce == 0.0 {
            return;
        }
        column_squares(w, &mut self.squares);
        let squares = &self.squares;
        let shared = self.logit.len() == 1;
        for (k, g) in grad.iter_mut().enumerate() {
            let q = self.keep[k];
            let theta = self.logit[if shared { 0 } else { k }].to_f64();
            *g += -cw * squares[k] * (1.0 - q) / q + ce * theta * q * (1.0 - q);
        }
    }

    /// `2 c_w / q[k]` per input unit: the regulariser's weight decay on column k of the weights
    /// (`None` without a weight term). Valid after a forward pass.
    pub fn weight_decay(&self) -> Option<&[T]> {
        (self.regularizer.weight != 0.0).then_some(&self.decay[..])
    }

    /// R of math.md N6 at the current keep and weights `w`.
    pub fn regularizer_value(&self, w: &Matrix<T>) -> f64 {
        let ConcreteRegularizer { weight: cw, entropy: ce } = self.regularizer;
        let mut squares = Vec::new();
        column_squares(w, &mut squares);
        self.keep_values()
            .iter()
            .zip(&squares)
            .map(|(&q, &s)| cw * s / q + ce * (q * q.ln() + (1.0 - q) * (1.0 - q).ln()))
            .sum()
    }
}

/// `S[k] = Σ_j w[j,k]²` into `squares`, the rows summed in order.
fn column_squares<T: Scalar>(w: &Matrix<T>, squares: &mut Vec<f64>) {
    squares.clear();
    squares.resize(w.cols(), 0.0);
    for j in 0..w.rows() {
        for (s, v) in squares.iter_mut().zip(w.row(j)) {
            *s += v.to_f64() * v.to_f64();
        }
    }
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
        let mut d = ConcreteDropout::<f64>::new(&[keep], 100, t, false).unwrap();
        let ones = Matrix::from_fn(500, 100, |_, _| 1.0);
        let mut out = Matrix::zeros(0, 0);
        let draw = MaskDraw { seed: 9, stream: Stream::Mask, layer: 0, step: 3, first_row: 0 };
        d.forward(&ones, &mut out, Some(&draw)).unwrap();
        let z: Vec<f64> = d.relaxed.as_slice().to_vec();
        let n = z.len() as f64;
        let mean = z.iter().sum::<f64>() / n;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        // the sample mean of 5·10^4 draws: within 4 standard errors √(var/n)
        assert!((mean - expected).abs() < 4.0 * (var / n).sqrt(), "mean {mean}, expected {expected}");
        // at t = 0.1 most bits are near 0 or 1: the relaxation is close to Bernoulli(keep)
        assert!((expected - keep).abs() < 0.05, "{expected}");
        // a_tilde = a · z̃ / q
        assert!((out.get(3, 4) - d.relaxed.get(3, 4) / keep).abs() < 1e-12);
        // evaluation is the identity
        d.forward(&ones, &mut out, None).unwrap();
        assert_eq!(out.as_slice(), ones.as_slice());
    }

    #[test]
    fn monte_carlo_passes_draw_hard_bits_at_the_learned_keep() {
        let mut d = ConcreteDropout::<f64>::new(&[0.6], 8, 0.1, true).unwrap();
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
    fn starting_keep_is_checked() {
        assert!(ConcreteDropout::<f64>::new(&[1.0], 3, 0.1, false).unwrap_err().to_string().contains("strictly"));
        assert!(ConcreteDropout::<f64>::new(&[0.5, 0.6], 3, 0.1, false).is_err());
        assert!(ConcreteDropout::<f64>::new(&[0.5], 3, 0.0, false).unwrap_err().to_string().contains("temperature"));
    }
}
