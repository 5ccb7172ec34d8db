//! The dropout step of a layer: forward `a_tilde = r/keep · a` (or the convention's variant),
//! backward through the same bits, and the eval scaling.

use super::kernels::{apply_mask, draw_and_apply, mask_segment_in_place, LaneThresholds};
use super::{threshold, BitMask, Keep, MaskDraw, Scaling};
use crate::error::{shape, Result};
use crate::tensor::{Matrix, Scalar};
use std::ops::Range;

/// Dropout on the input of one dense layer: its keep probabilities, its convention, and the mask
/// of the last training (or Monte-Carlo) forward pass, kept for backward.
#[derive(Clone, Debug)]
pub struct Dropout<T: Scalar> {
    keep: Keep,
    scaling: Scaling,
    thresholds: Vec<u64>,
    /// The same thresholds laid out for the 16-lane kernel.
    lanes: LaneThresholds,
    /// Factor on kept units in training: `1/keep[k]` (inverted) or 1 (standard).
    train_scale: Vec<T>,
    /// Factor in evaluation: 1 (inverted) or `keep[k]` (standard).
    eval_scale: Vec<T>,
    /// The mask of the last masked forward pass (r, bit-packed).
    mask: BitMask,
    /// A mask given by the caller, used instead of drawing one.
    fixed_mask: Option<BitMask>,
    /// Whether the last forward pass applied a mask (training, MC) or the eval scaling.
    masked: bool,
}

impl<T: Scalar> Dropout<T> {
    pub fn new(keep: Keep, scaling: Scaling) -> Self {
        let thresholds: Vec<u64> = keep.values().iter().map(|&p| threshold(p)).collect();
        let (train_scale, eval_scale) = scaling.factors(&keep);
        Self {
            keep,
            scaling,
            lanes: LaneThresholds::new(&thresholds),
            thresholds,
            train_scale,
            eval_scale,
            mask: BitMask::default(),
            fixed_mask: None,
            masked: false,
        }
    }

    pub fn keep(&self) -> &Keep {
        &self.keep
    }

    pub fn scaling(&self) -> Scaling {
        self.scaling
    }

    /// The mask of the last masked forward pass.
    pub fn mask(&self) -> &BitMask {
        &self.mask
    }

    /// Use `mask` in every masked forward pass instead of drawing one (`None` draws again).
    pub fn set_fixed_mask(&mut self, mask: Option<BitMask>) {
        self.fixed_mask = mask;
    }

    /// `a_tilde = r/keep · a` (or the convention's variant); `draw = None` is evaluation.
    pub fn forward(&mut self, a: &Matrix<T>, a_tilde: &mut Matrix<T>, draw: Option<&MaskDraw>) -> Result<()> {
        let (rows, cols) = a.shape();
        if cols != self.keep.units() {
            return Err(shape("dropout", format!("input has {cols} units, keep has {} values", self.keep.units())));
        }
        a_tilde.ensure_shape(rows, cols);
        let Some(draw) = draw else {
            // Evaluation: a_tilde[i,k] = eval_scale[k] · a[i,k], no mask.
            self.masked = false;
            for i in 0..rows {
                for ((o, &x), &s) in a_tilde.row_mut(i).iter_mut().zip(a.row(i)).zip(&self.eval_scale) {
                    *o = x * s;
                }
            }
            return Ok(());
        };
        self.masked = true;
        match &self.fixed_mask {
            Some(fixed) if fixed.rows() == rows && fixed.cols() == cols => {
                self.mask.clone_from(fixed);
                // a_tilde[i,k] = r[i,k] · train_scale[k] · a[i,k]
                apply_mask(&self.mask, &self.train_scale, a, a_tilde);
            }
            Some(fixed) => {
                return Err(shape(
                    "dropout",
                    format!("fixed mask is {}x{}, batch is {rows}x{cols}", fixed.rows(), fixed.cols()),
                ))
            }
            // The same, drawing r in the same pass.
            None => draw_and_apply(&mut self.mask, draw, &self.thresholds, &self.lanes, &self.train_scale, a, a_tilde),
        }
        Ok(())
    }

    /// `da[i,k] = da_tilde[i,k] · r[i,k] / keep[k]` (D7), or the
    /// derivative of whichever scaling the last forward pass applied. May run in place.
    pub fn backward(&self, da_tilde: &Matrix<T>, da: &mut Matrix<T>) {
        da.ensure_shape(da_tilde.rows(), da_tilde.cols());
        if self.masked {
            apply_mask(&self.mask, &self.train_scale, da_tilde, da);
        } else {
            for i in 0..da_tilde.rows() {
                for ((o, &g), &s) in da.row_mut(i).iter_mut().zip(da_tilde.row(i)).zip(&self.eval_scale) {
                    *o = g * s;
                }
            }
        }
    }

    /// [`Dropout::backward`] in place on one block of `d`, for the epilogue of the product that
    /// computes d (the layer's input gradient): rows `rows` and columns `cols` of d, element
    /// (rows.start + r, cols.start + j) at `block + r·ld + j`.
    ///
    /// # Safety
    /// The block must be valid for reads and writes, and no one else may touch it meanwhile.
    pub unsafe fn backward_block_in_place(&self, rows: Range<usize>, cols: Range<usize>, block: *mut T, ld: usize) {
        for (r, i) in rows.enumerate() {
            // SAFETY: the caller's contract, row r of the block.
            let d = unsafe { std::slice::from_raw_parts_mut(block.add(r * ld), cols.len()) };
            if self.masked {
                mask_segment_in_place(&self.mask, i, cols.start, &self.train_scale[cols.clone()], d);
            } else {
                for (g, &s) in d.iter_mut().zip(&self.eval_scale[cols.clone()]) {
                    *g *= s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernels::apply_mask;
    use super::*;
    use crate::rng::Stream;

    #[test]
    fn the_fused_pass_draws_the_same_bits_as_bulk_draw() {
        let draw = MaskDraw { seed: 77, stream: Stream::Mask, layer: 2, step: 5, first_row: 5 };
        // 300 rows of 131 units: three parallel tasks of up to 125 rows, several rows in each
        let keep = Keep::per_unit((0..131).map(|k| 0.2 + 0.8 * (k % 9) as f64 / 8.0).collect()).unwrap();
        let mut dropout = Dropout::<f32>::new(keep, Scaling::Inverted);
        let x = Matrix::from_fn(300, 131, |i, k| (i * 131 + k) as f32 * 0.001 + 0.5);
        let mut out = Matrix::zeros(0, 0);
        dropout.forward(&x, &mut out, Some(&draw)).unwrap();
        let mut bulk = BitMask::default();
        bulk.draw(300, 131, &draw, &dropout.thresholds);
        assert_eq!(dropout.mask(), &bulk);
        let mut applied = Matrix::zeros(300, 131);
        apply_mask(&bulk, &dropout.train_scale, &x, &mut applied);
        assert_eq!(out.as_slice(), applied.as_slice());
    }

    #[test]
    fn backward_on_blocks_equals_backward_on_the_whole_matrix() {
        // Blocks as a product's epilogue hands them over: column runs that start inside a mask
        // word (37, 96) and end inside one, rows in strips; trained (masked) and evaluation passes.
        let draw = MaskDraw { seed: 5, stream: Stream::Mask, layer: 1, step: 3, first_row: 0 };
        let keep = Keep::per_unit((0..200).map(|k| 0.3 + 0.7 * (k % 5) as f64 / 4.0).collect()).unwrap();
        let x = Matrix::from_fn(11, 200, |i, k| (i * 200 + k) as f32 * 0.01 - 9.0);
        for (scaling, draw) in [(Scaling::Inverted, Some(&draw)), (Scaling::Standard, None)] {
            let mut dropout = Dropout::<f32>::new(keep.clone(), scaling);
            dropout.forward(&x, &mut Matrix::zeros(0, 0), draw).unwrap();
            let mut whole = Matrix::zeros(0, 0);
            dropout.backward(&x, &mut whole);
            let mut blocks = x.clone();
            for rows in [0..8, 8..11] {
                for cols in [0..37, 37..96, 96..200] {
                    let at = blocks.as_mut_slice()[rows.start * 200 + cols.start..].as_mut_ptr();
                    // SAFETY: rows × cols lies inside `blocks` (row stride 200).
                    unsafe { dropout.backward_block_in_place(rows.clone(), cols, at, 200) };
                }
            }
            assert_eq!(blocks.as_slice(), whole.as_slice(), "{scaling}");
            assert_ne!(whole.as_slice(), x.as_slice(), "{scaling}: the pass must change something");
        }
    }
}
