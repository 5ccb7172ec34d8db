//! Gaussian dropout (Srivastava et al. 2014, §10): multiplicative noise with the mean and variance
//! of inverted Bernoulli dropout at keep P (math.md N3):
//!
//! ```text
//! train, MC  a_tilde[i,k] = ε[i,k] · a[i,k],   ε[i,k] = 1 + σ[k] · n[i,k],   σ[k]² = (1 − keep[k]) / keep[k]
//! eval       a_tilde = a
//! backward   da[i,k] = ε[i,k] · da_tilde[i,k]
//! ```
//!
//! `n[i,k]` is a standard normal drawn by Box–Muller from the Philox words of the unit's address
//! (`docs/masks.md`, "Gaussian noise"): the same address as a Bernoulli bit, two words per pair of
//! units. The factors ε of the last pass are stored for backward (4 bytes per unit, against the
//! Bernoulli mask's 1 bit), not regenerated: backward then costs one multiply per unit.

use super::{begin_forward, Keep, MaskDraw};
use crate::error::Result;
use crate::rng::{counter, key, philox4x32_10, unit_open};
use crate::tensor::{Matrix, Scalar};
use rayon::prelude::*;
use std::ops::Range;

/// Rows drawn per parallel task at least (a row of a few hundred units is a few microseconds).
const MIN_ROWS_PER_TASK: usize = 8;

/// The standard normals of the Philox call `words`: the pair (words[0], words[1]) gives units
/// 0 (cosine) and 1 (sine) of the block, (words[2], words[3]) units 2 and 3.
fn normals(words: [u32; 4]) -> [f64; 4] {
    let pair = |a: u32, b: u32| {
        let radius = (-2.0 * unit_open(a).ln()).sqrt();
        let angle = std::f64::consts::TAU * unit_open(b);
        [radius * angle.cos(), radius * angle.sin()]
    };
    let [n0, n1] = pair(words[0], words[1]);
    let [n2, n3] = pair(words[2], words[3]);
    [n0, n1, n2, n3]
}

/// The standard normal `n[row, column]` of `draw` (docs/masks.md, "Gaussian noise").
pub fn gaussian_normal(draw: &MaskDraw, row: u32, column: u32) -> f64 {
    let ctr = counter(draw.stream, draw.layer, draw.step, draw.first_row.wrapping_add(row), column / 4);
    normals(philox4x32_10(ctr, key(draw.seed)))[(column % 4) as usize]
}

/// Gaussian dropout on an input of `keep.units()` units, and the factors of its last noisy pass.
#[derive(Clone, Debug)]
pub struct GaussianDropout<T: Scalar> {
    keep: Keep,
    /// σ[k] = √((1 − keep[k]) / keep[k]).
    sigma: Vec<f64>,
    /// ε of the last noisy pass (`rows × units`).
    factor: Matrix<T>,
    /// Whether the last pass drew noise (training, MC) or was the identity (evaluation).
    noisy: bool,
}

impl<T: Scalar> GaussianDropout<T> {
    pub fn new(keep: Keep) -> Self {
        let sigma = keep.values().iter().map(|&p| ((1.0 - p) / p).sqrt()).collect();
        Self { keep, sigma, factor: Matrix::zeros(0, 0), noisy: false }
    }

    pub fn keep(&self) -> &Keep {
        &self.keep
    }

    /// ε of the last noisy pass (`rows × units`).
    pub fn factors(&self) -> &Matrix<T> {
        &self.factor
    }

    /// `a_tilde = ε · a` with fresh noise from `draw`; `draw = None` is evaluation (the identity).
    pub fn forward(&mut self, a: &Matrix<T>, a_tilde: &mut Matrix<T>, draw: Option<&MaskDraw>) -> Result<()> {
        let Some(draw) = begin_forward("gaussian dropout", self.keep.units(), a, a_tilde, draw)? else {
            self.noisy = false;
            return Ok(());
        };
        let (rows, cols) = a.shape();
        self.noisy = true;
        self.draw(rows, cols, draw);
        multiply(&self.factor, a, a_tilde);
        Ok(())
    }

    /// ε for `rows` rows of `cols` units, rows in parallel.
    fn draw(&mut self, rows: usize, cols: usize, draw: &MaskDraw) {
        self.factor.ensure_shape(rows, cols);
        if cols == 0 {
            return;
        }
        let philox_key = key(draw.seed);
        let sigma = &self.sigma;
        self.factor.as_mut_slice().par_chunks_mut(cols).enumerate().with_min_len(MIN_ROWS_PER_TASK).for_each(
            |(i, row)| {
                let r = draw.first_row.wrapping_add(i as u32);
                for (block, units) in row.chunks_mut(4).enumerate() {
                    let ctr = counter(draw.stream, draw.layer, draw.step, r, block as u32);
                    let n = normals(philox4x32_10(ctr, philox_key));
                    for (lane, e) in units.iter_mut().enumerate() {
                        *e = T::from_f64(1.0 + sigma[block * 4 + lane] * n[lane]);
                    }
                }
            },
        );
    }

    /// `da = ε · da_tilde` with the factors of the last forward pass (the identity after an
    /// evaluation pass). May run in place.
    pub fn backward(&self, da_tilde: &Matrix<T>, da: &mut Matrix<T>) {
        da.ensure_shape(da_tilde.rows(), da_tilde.cols());
        if self.noisy {
            multiply(&self.factor, da_tilde, da);
        } else {
            da.as_mut_slice().copy_from_slice(da_tilde.as_slice());
        }
    }

    /// [`GaussianDropout::backward`] in place on a block of `d` (rows are examples, `cols` units),
    /// for a product's epilogue.
    ///
    /// # Safety
    /// The block (element (rows.start + r, cols.start + j) at `block + r·ld + j`) must be valid
    /// for reads and writes, and no one else may touch it meanwhile.
    pub unsafe fn backward_block_in_place(&self, rows: Range<usize>, cols: Range<usize>, block: *mut T, ld: usize) {
        if !self.noisy {
            return;
        }
        for (r, i) in rows.enumerate() {
            let factor = &self.factor.row(i)[cols.clone()];
            // SAFETY: the caller's contract, row r of the block.
            let d = unsafe { std::slice::from_raw_parts_mut(block.add(r * ld), cols.len()) };
            for (v, &e) in d.iter_mut().zip(factor) {
                *v *= e;
            }
        }
    }
}

/// `out = factor ⊙ x`, rows in parallel.
fn multiply<T: Scalar>(factor: &Matrix<T>, x: &Matrix<T>, out: &mut Matrix<T>) {
    let cols = x.cols().max(1);
    let rows = out.as_mut_slice().par_chunks_mut(cols).zip(x.as_slice().par_chunks(cols));
    rows.zip(factor.as_slice().par_chunks(cols)).with_min_len(MIN_ROWS_PER_TASK).for_each(|((o, x), f)| {
        for ((o, &x), &f) in o.iter_mut().zip(x).zip(f) {
            *o = x * f;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;

    #[test]
    fn the_noise_has_mean_one_and_the_variance_of_inverted_dropout() {
        // 400 rows × 250 units = 10^5 draws per keep value
        let keep = [0.5, 0.8, 0.95];
        let mut d = GaussianDropout::<f64>::new(Keep::per_unit((0..250).map(|k| keep[k % 3]).collect()).unwrap());
        let ones = Matrix::from_fn(400, 250, |_, _| 1.0);
        let mut out = Matrix::zeros(0, 0);
        let draw = MaskDraw { seed: 11, stream: Stream::Mask, layer: 2, step: 7, first_row: 0 };
        d.forward(&ones, &mut out, Some(&draw)).unwrap();
        for (j, &p) in keep.iter().enumerate() {
            let values: Vec<f64> =
                (0..400).flat_map(|i| (j..250).step_by(3).map(move |k| (i, k))).map(|(i, k)| out.get(i, k)).collect();
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let sigma2 = (1.0 - p) / p;
            // mean: standard error σ/√n; variance of a normal sample: standard error σ²·√(2/n);
            // both within 4 standard errors
            assert!((mean - 1.0).abs() < 4.0 * (sigma2 / n).sqrt(), "keep {p}: mean {mean}");
            assert!((var - sigma2).abs() < 4.0 * sigma2 * (2.0 / n).sqrt(), "keep {p}: variance {var} vs {sigma2}");
        }
        // backward multiplies by the same factors, whole or by blocks; evaluation is the identity
        let mut back = Matrix::zeros(0, 0);
        d.backward(&ones, &mut back);
        assert_eq!(back.as_slice(), out.as_slice());
        let mut blocks = ones.clone();
        // SAFETY: rows 5..9, columns 3..20 lie inside `blocks` (row stride 250).
        unsafe { d.backward_block_in_place(5..9, 3..20, blocks.as_mut_slice()[5 * 250 + 3..].as_mut_ptr(), 250) };
        assert_eq!(blocks.get(6, 10), out.get(6, 10));
        d.forward(&ones, &mut out, None).unwrap();
        assert_eq!(out.as_slice(), ones.as_slice());
    }

    #[test]
    fn each_unit_reads_its_own_address() {
        let draw = MaskDraw { seed: 5, stream: Stream::McMask, layer: 1, step: 3, first_row: 40 };
        let mut d = GaussianDropout::<f64>::new(Keep::uniform(0.5, 9).unwrap());
        let (mut out, ones) = (Matrix::zeros(0, 0), Matrix::from_fn(3, 9, |_, _| 1.0));
        d.forward(&ones, &mut out, Some(&draw)).unwrap();
        for i in 0..3 {
            for k in 0..9 {
                // keep 0.5: σ = 1, so ε = 1 + n
                assert_eq!(out.get(i, k), 1.0 + gaussian_normal(&draw, i as u32, k as u32), "({i}, {k})");
            }
        }
    }
}
