//! Alpha dropout for self-normalising (SELU) networks (Klambauer et al. 2017), math.md N4. A
//! dropped unit takes SELU's negative saturation value `α' = −λα` instead of 0, and an affine map
//! restores mean 0 and variance 1 for inputs of mean 0 and variance 1:
//!
//! ```text
//! train, MC  a_tilde[i,k] = A[k] · (r[i,k] · a[i,k] + (1 − r[i,k]) · α') + B[k],   r ~ Bernoulli(keep[k])
//!            A[k] = (keep[k] + α'² · keep[k] · (1 − keep[k]))^(−1/2),   B[k] = −A[k] · (1 − keep[k]) · α'
//! eval       a_tilde = a
//! backward   da[i,k] = A[k] · r[i,k] · da_tilde[i,k]
//! ```
//!
//! The bits are those of Bernoulli dropout at the same address and keep (`docs/masks.md`): they
//! are drawn by [`Dropout`] under the standard convention (`r·a`, with its vectorised generator),
//! and a second pass over the rows maps `r·a` to the affine form.

use super::{begin_forward, BitMask, Dropout, Keep, MaskDraw, Scaling};
use crate::activation::{SELU_ALPHA, SELU_LAMBDA};
use crate::error::Result;
use crate::tensor::{Matrix, Scalar};
use rayon::prelude::*;
use std::ops::Range;

/// The value of a dropped unit, `−λα` with SELU's constants.
pub const ALPHA_PRIME: f64 = -SELU_LAMBDA * SELU_ALPHA;

/// Rows per parallel task at least.
const MIN_ROWS_PER_TASK: usize = 16;

/// Alpha dropout on an input of `keep.units()` units, and the mask of its last noisy pass.
#[derive(Clone, Debug)]
pub struct AlphaDropout<T: Scalar> {
    keep: Keep,
    /// Draws r and computes r·a (standard convention: no scaling).
    bernoulli: Dropout<T>,
    /// A[k], the factor on a kept unit.
    scale: Vec<T>,
    /// A[k]·α' + B[k], the value of a dropped unit.
    dropped: Vec<T>,
    /// B[k], added to a kept unit.
    shift: Vec<T>,
    /// Whether the last pass drew a mask (training, MC) or was the identity (evaluation).
    noisy: bool,
}

impl<T: Scalar> AlphaDropout<T> {
    pub fn new(keep: Keep) -> Self {
        let a = |q: f64| 1.0 / (q + ALPHA_PRIME * ALPHA_PRIME * q * (1.0 - q)).sqrt();
        let b = |q: f64| -a(q) * (1.0 - q) * ALPHA_PRIME;
        let values = keep.values();
        Self {
            bernoulli: Dropout::new(keep.clone(), Scaling::Standard),
            scale: values.iter().map(|&q| T::from_f64(a(q))).collect(),
            dropped: values.iter().map(|&q| T::from_f64(a(q) * ALPHA_PRIME + b(q))).collect(),
            shift: values.iter().map(|&q| T::from_f64(b(q))).collect(),
            keep,
            noisy: false,
        }
    }

    pub fn keep(&self) -> &Keep {
        &self.keep
    }

    /// The bits of the last noisy pass.
    pub fn mask(&self) -> &BitMask {
        self.bernoulli.mask()
    }

    /// `a_tilde` as the module's formula says, with a mask from `draw`; `None` is evaluation.
    pub fn forward(&mut self, a: &Matrix<T>, a_tilde: &mut Matrix<T>, draw: Option<&MaskDraw>) -> Result<()> {
        let Some(draw) = begin_forward("alpha dropout", self.keep.units(), a, a_tilde, draw)? else {
            self.noisy = false;
            return Ok(());
        };
        let (rows, cols) = a.shape();
        self.noisy = true;
        // a_tilde = r·a with this pass's bits, then the affine map row by row
        self.bernoulli.forward(a, a_tilde, Some(draw))?;
        if cols == 0 || rows == 0 {
            return Ok(());
        }
        let (mask, scale, dropped, shift) = (self.bernoulli.mask(), &self.scale, &self.dropped, &self.shift);
        let out_rows = a_tilde.as_mut_slice().par_chunks_mut(cols).enumerate().with_min_len(MIN_ROWS_PER_TASK);
        out_rows.for_each(|(i, o)| {
            // 64 units per mask word: the select compiles to a blend, no branch per unit
            for (w, &bits) in mask.row_words(i).iter().enumerate() {
                let units = w * 64..(w * 64 + 64).min(o.len());
                for (j, (o, k)) in o[units.clone()].iter_mut().zip(units).enumerate() {
                    let kept = scale[k] * *o + shift[k];
                    *o = if bits >> j & 1 == 1 { kept } else { dropped[k] };
                }
            }
        });
        Ok(())
    }

    /// `da = A · r · da_tilde` (the identity after an evaluation pass). May run in place.
    pub fn backward(&self, da_tilde: &Matrix<T>, da: &mut Matrix<T>) {
        da.ensure_shape(da_tilde.rows(), da_tilde.cols());
        da.as_mut_slice().copy_from_slice(da_tilde.as_slice());
        let cols = da.cols();
        if !self.noisy || cols == 0 {
            return;
        }
        let rows = da.as_mut_slice().par_chunks_mut(cols).enumerate().with_min_len(MIN_ROWS_PER_TASK);
        rows.for_each(|(i, d)| {
            // SAFETY: row i of `da`, `cols` values, borrowed mutably by this task alone.
            unsafe { self.backward_block_in_place(i..i + 1, 0..cols, d.as_mut_ptr(), cols) };
        });
    }

    /// [`AlphaDropout::backward`] in place on a block of `d` (rows are examples, `cols` units).
    ///
    /// # Safety
    /// The block (element (rows.start + r, cols.start + j) at `block + r·ld + j`) must be valid
    /// for reads and writes, and no one else may touch it meanwhile.
    pub unsafe fn backward_block_in_place(&self, rows: Range<usize>, cols: Range<usize>, block: *mut T, ld: usize) {
        if !self.noisy {
            return;
        }
        // r·d with the Bernoulli bits (standard convention: no scaling), then · A[k]
        // SAFETY: the caller's contract, passed on.
        unsafe { self.bernoulli.backward_block_in_place(rows.clone(), cols.clone(), block, ld) };
        for r in 0..rows.len() {
            // SAFETY: the caller's contract, row r of the block.
            let d = unsafe { std::slice::from_raw_parts_mut(block.add(r * ld), cols.len()) };
            d.iter_mut().zip(&self.scale[cols.clone()]).for_each(|(v, &a)| *v *= a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, StreamRng};

    #[test]
    fn standard_normal_inputs_keep_mean_zero_and_variance_one() {
        // 500 rows × 200 units = 10^5 values per keep value, inputs N(0, 1)
        let keep = [0.9, 0.95];
        let mut d = AlphaDropout::<f64>::new(Keep::per_unit((0..200).map(|k| keep[k % 2]).collect()).unwrap());
        let mut rng = StreamRng::new(4, Stream::Gradcheck, 0, 0);
        let x = Matrix::from_fn(500, 200, |_, _| rng.normal());
        let mut out = Matrix::zeros(0, 0);
        let draw = MaskDraw { seed: 9, stream: Stream::Mask, layer: 0, step: 1, first_row: 0 };
        d.forward(&x, &mut out, Some(&draw)).unwrap();
        for (j, &q) in keep.iter().enumerate() {
            let y: Vec<f64> =
                (0..500).flat_map(|i| (j..200).step_by(2).map(move |k| (i, k))).map(|(i, k)| out.get(i, k)).collect();
            let n = y.len() as f64;
            let mean = y.iter().sum::<f64>() / n;
            let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let m4 = y.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n;
            // the mean has standard error √(var/n); the sample variance √((m4 − var²)/n) (its
            // large-sample deviation from the fourth central moment); both within 4 of them
            assert!(mean.abs() < 4.0 * (var / n).sqrt(), "keep {q}: mean {mean}");
            assert!((var - 1.0).abs() < 4.0 * ((m4 - var * var) / n).sqrt(), "keep {q}: variance {var}");
            // and the fraction dropped is binomial(n, 1 − q): within 4 deviations
            let dropped = y.iter().filter(|&&v| v == d.dropped[j]).count() as f64;
            assert!((dropped - n * (1.0 - q)).abs() < 4.0 * (n * q * (1.0 - q)).sqrt(), "keep {q}: {dropped} dropped");
        }
        // backward: A on kept units, 0 on dropped ones
        let mut back = Matrix::zeros(0, 0);
        d.backward(&Matrix::from_fn(500, 200, |_, _| 1.0), &mut back);
        for k in 0..4 {
            assert_eq!(back.get(3, k), if d.mask().get(3, k) { d.scale[k] } else { 0.0 });
        }
        d.forward(&x, &mut out, None).unwrap();
        assert_eq!(out.as_slice(), x.as_slice());
    }
}
