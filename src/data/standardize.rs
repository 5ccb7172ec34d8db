//! Standardisation: per-column `v ← (v − mean) / std`, fitted on a training set (its features, or
//! its regression targets) and stored in model files.

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::tensor::Matrix;

/// Per-feature `x ← (x − mean) / std`, fitted on a training set and stored in model files so that
/// evaluation sees the same inputs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standardization {
    pub mean: Vec<f32>,
    /// 1 where a feature is constant.
    pub std: Vec<f32>,
}

impl Standardization {
    pub fn fit(x: &Matrix<f32>) -> Self {
        let n = x.rows() as f64;
        let mut sum = vec![0.0f64; x.cols()];
        let mut sq = vec![0.0f64; x.cols()];
        for i in 0..x.rows() {
            for (k, &v) in x.row(i).iter().enumerate() {
                sum[k] += v as f64;
                sq[k] += (v as f64) * (v as f64);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq.iter().zip(&mean).map(|(s, m)| (s / n - m * m).max(0.0).sqrt());
        Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: std.map(|s| if s > 1e-12 { s as f32 } else { 1.0 }).collect(),
        }
    }

    /// Whether this can standardise `inputs` features: one finite mean and one finite, positive
    /// deviation per feature (what a model file's `standardization` must satisfy).
    pub fn validate(&self, inputs: usize) -> std::result::Result<(), String> {
        if self.mean.len() != inputs || self.std.len() != inputs {
            return Err(format!(
                "{} means and {} deviations for {inputs} input features",
                self.mean.len(),
                self.std.len()
            ));
        }
        if let Some(k) = self.mean.iter().position(|m| !m.is_finite()) {
            return Err(format!("the mean of feature {k} is {}", self.mean[k]));
        }
        if let Some(k) = self.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!("the deviation of feature {k} is {}: it must be finite and positive", self.std[k]));
        }
        Ok(())
    }

    /// Standardise the features of `set`.
    pub fn apply(&self, set: &mut Dataset) -> Result<()> {
        self.apply_to(&mut set.x)
    }

    /// `v ← (v − mean) / std` for every row of `m`, column by column.
    pub fn apply_to(&self, m: &mut Matrix<f32>) -> Result<()> {
        self.check_width(m.cols())?;
        for i in 0..m.rows() {
            for ((v, mean), s) in m.row_mut(i).iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - mean) / s;
            }
        }
        Ok(())
    }

    /// `v ← mean + std · v` for column `d`: a standardised value back in the original units.
    pub fn restore(&self, d: usize, v: f64) -> f64 {
        self.mean[d] as f64 + self.std[d] as f64 * v
    }

    fn check_width(&self, width: usize) -> Result<()> {
        if width != self.mean.len() {
            return Err(Error::Config(format!(
                "the standardisation has {} columns, the data {width}",
                self.mean.len()
            )));
        }
        Ok(())
    }
}
