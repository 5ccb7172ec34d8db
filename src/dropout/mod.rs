//! Dropout on a layer's input: keep probabilities, the two scaling conventions, the mask address
//! and rule (here), bit-packed masks (`bitmask`), the layer (`layer`), and its kernels: the
//! portable row passes and the fused draw-and-apply pass (`kernels`), and their AVX-512
//! intrinsics versions (`avx512`).
//!
//! With `r[i,k] ~ Bernoulli(keep[k])` (math.md, N1):
//! ```text
//! inverted:  train  a_tilde[i,k] = r[i,k] / keep[k] * a[i,k]     eval  a_tilde = a
//! standard:  train  a_tilde[i,k] = r[i,k] * a[i,k]               eval  a_tilde[i,k] = keep[k] * a[i,k]
//! ```
//! Both give `E[a_tilde] ` equal to the eval value, so a network trained with one convention and
//! evaluated with the same one sees, in expectation, the pre-activations it was trained on.
//! Backward is the chain rule through the same step (math.md, N1 and D7; forgetting the `1/keep`
//! here is the classic bug): `da[i,k] = da_tilde[i,k] * r[i,k] / keep[k]`
//! (inverted) or `da_tilde[i,k] * r[i,k]` (standard), and through the eval scaling in eval mode.

mod alpha;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod bitmask;
mod concrete;
mod concrete_prior;
mod dropconnect;
mod gaussian;
mod kernels;
mod layer;
mod spatial;

pub use alpha::{AlphaDropout, ALPHA_PRIME};
pub use bitmask::BitMask;
pub use concrete::{logit, relaxed_bit, ConcreteDropout, KeepSummary};
pub use concrete_prior::{likelihood_scale, ConcretePrior, ConcreteRegularizer};
pub use dropconnect::DropConnect;
pub use gaussian::{gaussian_normal, GaussianDropout};
pub use layer::Dropout;
pub use spatial::SpatialDropout;

use crate::error::{Error, Result};
use crate::rng::{counter, key, philox4x32_10, Stream};
use std::fmt;
use std::str::FromStr;

/// Where the scaling by `keep` happens (math.md, N1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// Scale kept units by `1/keep` in training; evaluation is untouched.
    #[default]
    Inverted,
    /// No scaling in training; evaluation multiplies by `keep`.
    Standard,
}

impl Scaling {
    /// The factors on a kept unit, per unit of `keep`: in training (`1/keep` inverted, 1
    /// standard) and in evaluation (1 inverted, `keep` standard).
    pub fn factors<T: crate::tensor::Scalar>(self, keep: &Keep) -> (Vec<T>, Vec<T>) {
        keep.values()
            .iter()
            .map(|&p| match self {
                Scaling::Inverted => (T::from_f64(1.0 / p), T::ONE),
                Scaling::Standard => (T::ONE, T::from_f64(p)),
            })
            .unzip()
    }
}

impl fmt::Display for Scaling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scaling::Inverted => "inverted",
            Scaling::Standard => "standard",
        })
    }
}

impl FromStr for Scaling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "inverted" => Ok(Scaling::Inverted),
            "standard" => Ok(Scaling::Standard),
            _ => Err(Error::Config(format!("unknown scaling '{s}' (expected inverted or standard)"))),
        }
    }
}

/// Keep probabilities of one layer's input units, each in (0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Keep {
    per_unit: Vec<f64>,
}

impl Keep {
    /// One keep probability per unit.
    pub fn per_unit(values: Vec<f64>) -> Result<Self> {
        for (k, &v) in values.iter().enumerate() {
            // written so that NaN fails too
            if !(v > 0.0 && v <= 1.0) {
                return Err(Error::Keep { value: v, where_: format!("for unit {k}") });
            }
        }
        Ok(Self { per_unit: values })
    }

    /// Keep probabilities of the input units of dense layer `layer`; an error names unit and layer.
    pub fn of_layer(values: Vec<f64>, layer: usize) -> Result<Self> {
        Self::per_unit(values).map_err(|e| match e {
            Error::Keep { value, where_ } => {
                Error::Keep { value, where_: format!("{where_} of layer {layer}'s input") }
            }
            other => other,
        })
    }

    /// The same keep probability for all `units` units.
    pub fn uniform(value: f64, units: usize) -> Result<Self> {
        if !(value > 0.0 && value <= 1.0) {
            return Err(Error::Keep { value, where_: "for the layer".into() });
        }
        Ok(Self { per_unit: vec![value; units] })
    }

    pub fn units(&self) -> usize {
        self.per_unit.len()
    }

    pub fn values(&self) -> &[f64] {
        &self.per_unit
    }

    /// True when no unit is ever dropped.
    pub fn keeps_all(&self) -> bool {
        self.per_unit.iter().all(|&v| v == 1.0)
    }
}

/// The mask threshold of a keep probability: a unit is kept when its 32 random bits, read as an
/// unsigned integer, are below `round(keep · 2^32)`, halves rounded away from zero (`f64::round`;
/// the product is exact, so this is the integer nearest to it). keep = 1 gives 2^32, so every unit
/// is kept. `docs/masks.md` states the rule with a table of thresholds.
pub fn threshold(keep: f64) -> u64 {
    (keep * 4_294_967_296.0).round() as u64
}

/// Where a batch's mask bits live in the generator's address space (see `docs/masks.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskDraw {
    pub seed: u64,
    pub stream: Stream,
    /// Ordinal of the noise whose bits these are, over the stack's noise tokens (0 = the first).
    pub layer: u32,
    /// Training step, or Monte-Carlo sample index.
    pub step: u32,
    /// Generator row of the batch's first example.
    pub first_row: u32,
}

/// The 32 random bits behind mask bit (`row`, `column`) of `draw`.
pub fn mask_word(draw: &MaskDraw, row: u32, column: u32) -> u32 {
    let ctr = counter(draw.stream, draw.layer, draw.step, row, column / 4);
    philox4x32_10(ctr, key(draw.seed))[(column % 4) as usize]
}

/// The bit `r` of one example and unit: true = kept. This is the whole mask rule; [`BitMask::draw`]
/// computes the same bits four columns per generator call.
pub fn mask_bit(draw: &MaskDraw, row: u32, column: u32, keep: f64) -> bool {
    (mask_word(draw, row, column) as u64) < threshold(keep)
}

/// The common start of an elementwise noise's forward pass (Gaussian, alpha): `a` must have
/// `units` columns, `a_tilde` takes its shape, and in evaluation (`draw = None`) `a_tilde = a`.
/// Returns the draw when the pass is noisy, `None` when it is done.
pub(crate) fn begin_forward<'d, T: crate::tensor::Scalar>(
    name: &'static str,
    units: usize,
    a: &crate::tensor::Matrix<T>,
    a_tilde: &mut crate::tensor::Matrix<T>,
    draw: Option<&'d MaskDraw>,
) -> Result<Option<&'d MaskDraw>> {
    let (rows, cols) = a.shape();
    if cols != units {
        return Err(crate::error::shape(name, format!("input has {cols} units, keep has {units}")));
    }
    a_tilde.ensure_shape(rows, cols);
    if draw.is_none() {
        a_tilde.as_mut_slice().copy_from_slice(a.as_slice());
    }
    Ok(draw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_outside_unit_interval_is_an_error_naming_the_value() {
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            let err = Keep::per_unit(vec![0.5, bad]).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad}")) && err.contains("unit 1"), "{err}");
            assert!(Keep::uniform(bad, 3).is_err());
        }
        assert!(Keep::per_unit(vec![1.0, 1e-9]).is_ok());
    }

    #[test]
    fn threshold_bounds() {
        assert_eq!(threshold(1.0), 1 << 32);
        assert_eq!(threshold(0.5), 1 << 31);
    }

    #[test]
    fn bulk_draw_equals_the_bit_rule() {
        let draw = MaskDraw { seed: 42, stream: Stream::Mask, layer: 1, step: 9, first_row: 5 };
        let keep: Vec<f64> = (0..70).map(|k| 0.1 + 0.9 * (k as f64) / 69.0).collect();
        let thresholds: Vec<u64> = keep.iter().map(|&p| threshold(p)).collect();
        let mut mask = BitMask::default();
        mask.draw(3, 70, &draw, &thresholds);
        for i in 0..3 {
            for (k, &p) in keep.iter().enumerate() {
                assert_eq!(mask.get(i, k), mask_bit(&draw, 5 + i as u32, k as u32, p));
            }
        }
    }
}
