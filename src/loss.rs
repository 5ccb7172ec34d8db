//! Losses J and their gradient ∂J/∂output, the starting point of backward.
//!
//! - Softmax cross-entropy on logits z: `J = (1/m) Σ_i [logsumexp(z[i,:]) − z[i,y_i]]`, with the fused
//!   gradient `∂J/∂z = (softmax(z) − onehot(y)) / m`.
//! - Mean squared error: `J = 1/(m·n) Σ_i,j (a[i,j] − y[i,j])²`, gradient `2 (a − y) / (m·n)`.
//! - Binary cross-entropy with logits: `J = 1/(m·n) Σ_i,j [max(z,0) − z·y + ln(1 + e^−|z|)]`, gradient
//!   `(σ(z) − y) / (m·n)`.
//! - Gaussian negative log-likelihood (heteroscedastic regression, Kendall & Gal 2017): the output
//!   row holds D means μ then D log-variances s; `J = 1/(m·D) Σ_i,d [½ e^−s (y − μ)² + ½ s + ½ ln 2π]`,
//!   gradient `∂J/∂μ = −e^−s (y − μ) / (m·D)`, `∂J/∂s = ½ (1 − e^−s (y − μ)²) / (m·D)` (math.md R2).
//!
//! MSE, BCE and the Gaussian NLL average over all m·n (m·D) elements and cross-entropy over the m examples, as PyTorch's
//! defaults do. Every form is computed without overflow (log-sum-exp shifted by the row maximum).

use crate::activation::{sigmoid, softmax_row, Activation};
use crate::error::{shape, Error, Result};
use crate::tensor::{Matrix, Scalar};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Loss {
    /// Softmax + cross-entropy on the network's logits (its output activation must be identity).
    #[default]
    #[serde(rename = "softmax-cross-entropy")]
    SoftmaxCrossEntropy,
    /// Mean squared error on the network's output.
    #[serde(rename = "mse")]
    MeanSquaredError,
    /// Sigmoid + binary cross-entropy on logits, per output unit (identity output activation).
    #[serde(rename = "bce-with-logits")]
    BinaryCrossEntropyWithLogits,
    /// Gaussian negative log-likelihood of continuous targets: the output holds a mean and a
    /// log-variance per target (identity output activation).
    #[serde(rename = "gaussian-nll")]
    GaussianNll,
}

/// What a batch's outputs are compared with.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a, T: Scalar> {
    /// One class index per example (softmax cross-entropy).
    Labels(&'a [usize]),
    /// One row of target values per example (MSE, BCE).
    Values(&'a Matrix<T>),
}

impl Loss {
    pub const ALL: [Loss; 4] =
        [Loss::SoftmaxCrossEntropy, Loss::MeanSquaredError, Loss::BinaryCrossEntropyWithLogits, Loss::GaussianNll];

    pub fn name(self) -> &'static str {
        match self {
            Loss::SoftmaxCrossEntropy => "softmax-cross-entropy",
            Loss::MeanSquaredError => "mse",
            Loss::BinaryCrossEntropyWithLogits => "bce-with-logits",
            Loss::GaussianNll => "gaussian-nll",
        }
    }

    /// Output units per regression target: 2 (mean, log-variance) for the Gaussian NLL, else 1.
    pub fn outputs_per_target(self) -> usize {
        if self == Loss::GaussianNll {
            2
        } else {
            1
        }
    }

    /// Whether the loss can train on continuous targets (mse and the Gaussian NLL).
    pub fn is_regression(self) -> bool {
        matches!(self, Loss::MeanSquaredError | Loss::GaussianNll)
    }

    /// Whether the loss can train on class labels (the Gaussian NLL needs continuous targets).
    pub fn takes_labels(self) -> bool {
        self != Loss::GaussianNll
    }

    /// The losses on logits fuse their own sigmoid or softmax: the network must output raw z.
    pub fn check_output_activation(self, output: Activation) -> Result<()> {
        if self != Loss::MeanSquaredError && output != Activation::Identity {
            return Err(Error::Config(format!(
                "loss {} takes logits: the output activation must be identity, not {output}",
                self.name()
            )));
        }
        Ok(())
    }

    /// J over the batch; writes ∂J/∂output into `grad`.
    pub fn compute<T: Scalar>(self, output: &Matrix<T>, targets: Targets<'_, T>, grad: &mut Matrix<T>) -> Result<f64> {
        let (m, n) = output.shape();
        grad.ensure_shape(m, n);
        match (self, targets) {
            (Loss::SoftmaxCrossEntropy, Targets::Labels(labels)) => {
                check_labels(labels, m, n)?;
                Ok(softmax_cross_entropy(output, labels, grad))
            }
            (Loss::MeanSquaredError | Loss::BinaryCrossEntropyWithLogits, Targets::Values(y)) => {
                if y.shape() != (m, n) {
                    return Err(shape("loss", format!("targets are {}x{}, output is {m}x{n}", y.rows(), y.cols())));
                }
                Ok(if self == Loss::MeanSquaredError { mse(output, y, grad) } else { bce_with_logits(output, y, grad) })
            }
            (Loss::GaussianNll, Targets::Values(y)) => {
                if y.rows() != m || 2 * y.cols() != n {
                    return Err(shape(
                        "loss",
                        format!(
                            "gaussian-nll needs 2 outputs per target (mean, log-variance): targets are {}x{}, output is {m}x{n}",
                            y.rows(),
                            y.cols()
                        ),
                    ));
                }
                Ok(gaussian_nll(output, y, grad))
            }
            (loss, Targets::Labels(_)) => {
                Err(Error::Config(format!("loss {} needs target values, not labels", loss.name())))
            }
            (loss, Targets::Values(_)) => Err(Error::Config(format!("loss {} needs class labels", loss.name()))),
        }
    }
}

fn check_labels(labels: &[usize], m: usize, classes: usize) -> Result<()> {
    if labels.len() != m {
        return Err(shape("loss", format!("{} labels for {m} examples", labels.len())));
    }
    match labels.iter().position(|&y| y >= classes) {
        Some(index) => Err(Error::Label { label: labels[index], index, classes }),
        None => Ok(()),
    }
}

fn softmax_cross_entropy<T: Scalar>(z: &Matrix<T>, labels: &[usize], grad: &mut Matrix<T>) -> f64 {
    let m = z.rows();
    let inv_m = T::from_f64(1.0 / m as f64);
    let mut total = 0.0;
    for (i, &y) in labels.iter().enumerate() {
        let row = z.row(i);
        let max = row.iter().fold(row[0], |a, &b| a.max(b));
        let sum: f64 = row.iter().map(|&v| (v - max).exp().to_f64()).sum();
        // −log softmax(z)_y = logsumexp(z) − z_y
        total += max.to_f64() + sum.ln() - row[y].to_f64();
        // ∂J/∂z = (softmax(z) − onehot(y)) / m
        let g = grad.row_mut(i);
        softmax_row(row, g);
        g[y] -= T::ONE;
        for v in g.iter_mut() {
            *v *= inv_m;
        }
    }
    total / m as f64
}

fn mse<T: Scalar>(a: &Matrix<T>, y: &Matrix<T>, grad: &mut Matrix<T>) -> f64 {
    let count = a.as_slice().len() as f64;
    let scale = T::from_f64(2.0 / count);
    let mut total = 0.0;
    for ((g, &ai), &yi) in grad.as_mut_slice().iter_mut().zip(a.as_slice()).zip(y.as_slice()) {
        let diff = ai - yi;
        total += (diff * diff).to_f64();
        *g = scale * diff;
    }
    total / count
}

fn bce_with_logits<T: Scalar>(z: &Matrix<T>, y: &Matrix<T>, grad: &mut Matrix<T>) -> f64 {
    let count = z.as_slice().len() as f64;
    let scale = T::from_f64(1.0 / count);
    let mut total = 0.0;
    for ((g, &zi), &yi) in grad.as_mut_slice().iter_mut().zip(z.as_slice()).zip(y.as_slice()) {
        // −[y ln σ(z) + (1−y) ln(1−σ(z))] = max(z,0) − z·y + ln(1 + e^−|z|)
        total += (zi.max(T::ZERO) - zi * yi + (-zi.abs()).exp().ln_1p()).to_f64();
        *g = (sigmoid(zi) - yi) * scale;
    }
    total / count
}

/// R2 (math.md): the mean over m·D elements of −log N(y; μ, e^s), μ and s the output row's halves.
fn gaussian_nll<T: Scalar>(out: &Matrix<T>, y: &Matrix<T>, grad: &mut Matrix<T>) -> f64 {
    let d = y.cols();
    let count = (out.rows() * d) as f64;
    let scale = T::from_f64(1.0 / count);
    let half = T::from_f64(0.5);
    let half_ln_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let mut total = 0.0;
    for i in 0..out.rows() {
        let (row, targets) = (out.row(i), y.row(i));
        let g = grad.row_mut(i);
        for k in 0..d {
            let (mu, s) = (row[k], row[d + k]);
            let diff = targets[k] - mu;
            let precision = (-s).exp();
            let weighted = precision * diff * diff;
            total += (half * (weighted + s)).to_f64() + half_ln_2pi;
            // ∂J/∂μ = −e^−s (y − μ) / (m·D)
            g[k] = -(precision * diff) * scale;
            // ∂J/∂s = ½ (1 − e^−s (y − μ)²) / (m·D)
            g[d + k] = half * (T::ONE - weighted) * scale;
        }
    }
    total / count
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Loss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Loss::ALL.into_iter().find(|l| l.name() == s).ok_or_else(|| {
            Error::Config(format!(
                "unknown loss '{s}' (expected softmax-cross-entropy, mse, bce-with-logits or gaussian-nll)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_of_equal_logits_is_ln_classes() {
        let z = Matrix::<f64>::zeros(2, 4);
        let mut g = Matrix::zeros(0, 0);
        let j = Loss::SoftmaxCrossEntropy.compute(&z, Targets::Labels(&[1, 3]), &mut g).unwrap();
        assert!((j - 4f64.ln()).abs() < 1e-15);
        // (1/4 − 1)/2 on the label, (1/4)/2 elsewhere
        assert!((g.get(0, 1) + 0.375).abs() < 1e-15 && (g.get(0, 0) - 0.125).abs() < 1e-15);
    }

    #[test]
    fn cross_entropy_is_finite_for_huge_logits() {
        let z = Matrix::<f32>::from_vec(1, 3, vec![1.0e4, -1.0e4, 0.0]).unwrap();
        let mut g = Matrix::zeros(0, 0);
        let j = Loss::SoftmaxCrossEntropy.compute(&z, Targets::Labels(&[1]), &mut g).unwrap();
        assert!((j - 2.0e4).abs() < 1.0, "{j}");
        assert!(g.as_slice().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn bce_is_finite_for_huge_logits_and_matches_the_definition() {
        let z = Matrix::<f64>::from_vec(1, 3, vec![800.0, -800.0, 0.3]).unwrap();
        let y = Matrix::from_vec(1, 3, vec![0.0, 1.0, 1.0]).unwrap();
        let mut g = Matrix::zeros(0, 0);
        let j = Loss::BinaryCrossEntropyWithLogits.compute(&z, Targets::Values(&y), &mut g).unwrap();
        let third = -(1.0 / (1.0 + (-0.3f64).exp())).ln();
        assert!((j - (800.0 + 800.0 + third) / 3.0).abs() < 1e-9, "{j}");
    }

    #[test]
    fn gaussian_nll_is_the_normal_density_and_needs_two_outputs_per_target() {
        // y = 1, μ = 0.5, s = ln 0.25: −log N(1; 0.5, 0.25) = ½ ln(2π·0.25) + 0.25/(2·0.25)
        let out = Matrix::<f64>::from_vec(1, 2, vec![0.5, 0.25f64.ln()]).unwrap();
        let y = Matrix::from_vec(1, 1, vec![1.0]).unwrap();
        let mut g = Matrix::zeros(0, 0);
        let j = Loss::GaussianNll.compute(&out, Targets::Values(&y), &mut g).unwrap();
        let expected = 0.5 * (2.0 * std::f64::consts::PI * 0.25).ln() + 0.25 / (2.0 * 0.25);
        assert!((j - expected).abs() < 1e-12, "{j} {expected}");
        // ∂/∂μ = −(y − μ)/σ² = −2, ∂/∂s = ½ (1 − (y − μ)²/σ²) = 0
        assert!((g.get(0, 0) + 2.0).abs() < 1e-12 && g.get(0, 1).abs() < 1e-12);
        let wrong = Matrix::<f64>::zeros(1, 3);
        assert!(Loss::GaussianNll
            .compute(&wrong, Targets::Values(&y), &mut g)
            .unwrap_err()
            .to_string()
            .contains("2 outputs per target"));
    }

    #[test]
    fn label_beyond_the_output_width_is_an_error() {
        let z = Matrix::<f32>::zeros(2, 3);
        let mut g = Matrix::zeros(0, 0);
        let err = Loss::SoftmaxCrossEntropy.compute(&z, Targets::Labels(&[0, 7]), &mut g).unwrap_err();
        assert_eq!(err.to_string(), "label 7 at example 1 is out of range: the output has 3 classes");
    }

    #[test]
    fn logit_losses_refuse_a_squashing_output() {
        assert!(Loss::SoftmaxCrossEntropy.check_output_activation(Activation::Softmax).is_err());
        assert!(Loss::MeanSquaredError.check_output_activation(Activation::Sigmoid).is_ok());
    }
}
