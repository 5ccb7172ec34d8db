//! Spatial dropout (Tompson et al. 2015): one Bernoulli bit per example and channel of a feature
//! map, shared by all its positions (math.md, N2). With `r[i,c] ~ Bernoulli(keep[c])` on a map
//! stored channels last (unit `(h·W + w)·C + c`):
//!
//! ```text
//! inverted:  train  a_tilde[i,(h,w,c)] = r[i,c] / keep[c] · a[i,(h,w,c)]     eval  a_tilde = a
//! standard:  train  a_tilde[i,(h,w,c)] = r[i,c] · a[i,(h,w,c)]              eval  keep[c] · a
//! backward   da[i,(h,w,c)] = da_tilde[i,(h,w,c)] · (the same factor)
//! ```
//!
//! The bit of (example i, channel c) is the mask bit of row i, column c of the noise's address
//! (`docs/masks.md`): the rule of per-unit dropout with channels in place of units.

use super::{threshold, BitMask, Keep, MaskDraw, Scaling};
use crate::error::{shape, Result};
use crate::tensor::{Matrix, Scalar};
use rayon::prelude::*;
use std::ops::Range;

/// Spatial dropout on a map of `channels` channels (any number of positions), and the factors of
/// its last masked pass, kept for backward.
#[derive(Clone, Debug)]
pub struct SpatialDropout<T: Scalar> {
    keep: Keep,
    scaling: Scaling,
    thresholds: Vec<u64>,
    /// Factor on kept channels in training: `1/keep[c]` (inverted) or 1 (standard).
    train_scale: Vec<T>,
    /// Factor in evaluation: 1 (inverted) or `keep[c]` (standard).
    eval_scale: Vec<T>,
    mask: BitMask,
    /// Per example and channel, the factor the last pass applied (`r·train_scale`, or
    /// `eval_scale` in evaluation): `rows × channels`.
    factor: Vec<T>,
}

impl<T: Scalar> SpatialDropout<T> {
    /// One keep probability per channel.
    pub fn new(keep: Keep, scaling: Scaling) -> Self {
        let thresholds = keep.values().iter().map(|&p| threshold(p)).collect();
        let (train_scale, eval_scale) = scaling.factors(&keep);
        Self { keep, scaling, thresholds, train_scale, eval_scale, mask: BitMask::default(), factor: Vec::new() }
    }

    pub fn keep(&self) -> &Keep {
        &self.keep
    }

    pub fn scaling(&self) -> Scaling {
        self.scaling
    }

    /// The bits of the last masked pass: `rows × channels`.
    pub fn mask(&self) -> &BitMask {
        &self.mask
    }

    fn channels(&self) -> usize {
        self.keep.units()
    }

    /// `a_tilde = factor · a` over a batch `a` whose rows are maps of this many channels;
    /// `draw = None` is evaluation.
    pub fn forward(&mut self, a: &Matrix<T>, a_tilde: &mut Matrix<T>, draw: Option<&MaskDraw>) -> Result<()> {
        let (rows, cols) = a.shape();
        let c = self.channels();
        if c == 0 || cols % c != 0 {
            return Err(shape("spatial dropout", format!("rows of {cols} values are not maps of {c} channels")));
        }
        self.factor.clear();
        self.factor.resize(rows * c, T::ZERO);
        match draw {
            Some(draw) => {
                self.mask.draw(rows, c, draw, &self.thresholds);
                for (i, f) in self.factor.chunks_mut(c).enumerate() {
                    for (k, f) in f.iter_mut().enumerate() {
                        *f = if self.mask.get(i, k) { self.train_scale[k] } else { T::ZERO };
                    }
                }
            }
            None => self.factor.chunks_mut(c).for_each(|f| f.copy_from_slice(&self.eval_scale)),
        }
        a_tilde.ensure_shape(rows, cols);
        scale_maps(&self.factor, c, a, a_tilde);
        Ok(())
    }

    /// `da = factor · da_tilde`, with the factors of the last forward pass. May run in place.
    pub fn backward(&self, da_tilde: &Matrix<T>, da: &mut Matrix<T>) {
        da.ensure_shape(da_tilde.rows(), da_tilde.cols());
        scale_maps(&self.factor, self.channels(), da_tilde, da);
    }

    /// [`SpatialDropout::backward`] in place on a block of `d` whose rows are examples and whose
    /// columns `cols` are units (for the epilogue of a dense layer's input-gradient product).
    ///
    /// # Safety
    /// The block (element (rows.start + r, cols.start + j) at `block + r·ld + j`) must be valid
    /// for reads and writes, and no one else may touch it meanwhile.
    pub unsafe fn backward_block_in_place(&self, rows: Range<usize>, cols: Range<usize>, block: *mut T, ld: usize) {
        let c = self.channels();
        for (r, i) in rows.enumerate() {
            let factor = &self.factor[i * c..(i + 1) * c];
            // SAFETY: the caller's contract, row r of the block.
            let d = unsafe { std::slice::from_raw_parts_mut(block.add(r * ld), cols.len()) };
            for (v, k) in d.iter_mut().zip(cols.clone()) {
                *v *= factor[k % c];
            }
        }
    }

    /// The factor of example `i`, channel `c` in the last pass (for the convolution's epilogue).
    pub fn factors(&self, i: usize) -> &[T] {
        let c = self.channels();
        &self.factor[i * c..(i + 1) * c]
    }
}

/// `out[i, p·C + c] = x[i, p·C + c] · factor[i·C + c]`, rows in parallel.
fn scale_maps<T: Scalar>(factor: &[T], c: usize, x: &Matrix<T>, out: &mut Matrix<T>) {
    let cols = x.cols();
    if cols == 0 {
        return;
    }
    out.as_mut_slice().par_chunks_mut(cols).zip(x.as_slice().par_chunks(cols)).enumerate().for_each(|(i, (o, x))| {
        let f = &factor[i * c..(i + 1) * c];
        for (o, x) in o.chunks_mut(c).zip(x.chunks(c)) {
            for ((o, &x), &f) in o.iter_mut().zip(x).zip(f) {
                *o = x * f;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;

    #[test]
    fn every_position_of_a_channel_shares_its_bit() {
        // 2000 examples of 3x2 maps (6 positions) with 4 channels
        let keep = [0.2, 0.5, 0.8, 1.0];
        let mut d = SpatialDropout::<f64>::new(Keep::per_unit(keep.to_vec()).unwrap(), Scaling::Inverted);
        let x = Matrix::from_fn(2000, 24, |_, _| 1.0);
        let mut out = Matrix::zeros(0, 0);
        let draw = MaskDraw { seed: 3, stream: Stream::Mask, layer: 0, step: 0, first_row: 0 };
        d.forward(&x, &mut out, Some(&draw)).unwrap();
        for (c, &p) in keep.iter().enumerate() {
            let mut kept = 0.0;
            for i in 0..2000 {
                let values: Vec<f64> = (0..6).map(|pos| out.get(i, pos * 4 + c)).collect();
                assert!(values.iter().all(|&v| v == values[0]), "example {i}, channel {c}: {values:?}");
                assert!(values[0] == 0.0 || (values[0] - 1.0 / p).abs() < 1e-12);
                kept += f64::from(u8::from(values[0] != 0.0));
            }
            // binomial(2000, p): within 4 standard deviations of 2000·p (exactly all at keep 1)
            let sd = (2000.0 * p * (1.0 - p)).sqrt();
            assert!((kept - 2000.0 * p).abs() <= 4.0 * sd, "channel {c}: {kept} kept at keep {p}");
        }
        // backward multiplies by the same factors
        let mut back = Matrix::zeros(0, 0);
        d.backward(&x, &mut back);
        assert_eq!(back.as_slice(), out.as_slice());
        let mut blocks = x.clone();
        // SAFETY: rows 5..9, columns 3..20 lie inside `blocks` (row stride 24).
        unsafe { d.backward_block_in_place(5..9, 3..20, blocks.as_mut_slice()[5 * 24 + 3..].as_mut_ptr(), 24) };
        for i in 5..9 {
            for k in 3..20 {
                assert_eq!(blocks.get(i, k), out.get(i, k));
            }
        }
    }
}
