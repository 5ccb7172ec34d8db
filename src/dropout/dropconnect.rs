//! DropConnect (Wan et al. 2013): a Bernoulli mask on the weights of a dense layer instead of on
//! its input (math.md N5). With `M[j,k] ~ Bernoulli(keep)` and the convention's factor s (`1/keep`
//! inverted, 1 standard):
//!
//! ```text
//! train, MC  z = ã · (s·M ⊙ W)ᵀ + b                 eval  z = ã · (e·W)ᵀ + b   (e: 1 inverted, keep standard)
//! backward   dW = (dzᵀ · ã) ⊙ s·M                   dã = dz · (s·M ⊙ W)
//! ```
//!
//! One mask per training step, shared by the batch's examples; in `Mode::McSample` one mask per
//! sample, shared by every example, so that predictions do not depend on the batching. The paper
//! trains with a mask per example, which costs a matrix-vector product per example; dropnet does not
//! offer it. Evaluation uses the expected weights (the paper's moment-matching inference is not
//! built). Mask bit (j, k) is the Bernoulli bit of row j (the output unit), column k (the input
//! unit) of the noise's address (`docs/masks.md`), with row 0 at output unit 0 in every mode.

use super::{threshold, BitMask, Keep, MaskDraw, Scaling};
use crate::error::{Error, Result};
use crate::tensor::{Matrix, Scalar};
use rayon::prelude::*;
use std::ops::Range;

/// Output units per parallel task at least.
const MIN_ROWS_PER_TASK: usize = 16;

/// DropConnect on the weights of one dense layer, and the masked weights of its last pass.
#[derive(Clone, Debug)]
pub struct DropConnect<T: Scalar> {
    /// One keep probability for every weight.
    keep: Keep,
    scaling: Scaling,
    threshold: u64,
    /// s: the factor on a kept weight in training.
    train_scale: T,
    /// e: the factor on every weight in evaluation.
    eval_scale: T,
    mask: BitMask,
    /// s·M ⊙ W (training, MC) or e·W (evaluation) of the last pass.
    weight: Matrix<T>,
    /// Whether the last pass drew a mask.
    masked: bool,
}

impl<T: Scalar> DropConnect<T> {
    /// One keep probability for every weight of the layer.
    pub fn new(keep: f64, scaling: Scaling) -> Result<Self> {
        let keep_values = Keep::uniform(keep, 1).map_err(|e| Error::Config(format!("dropconnect: {e}")))?;
        let (train_scale, eval_scale) = match scaling {
            Scaling::Inverted => (T::from_f64(1.0 / keep), T::ONE),
            Scaling::Standard => (T::ONE, T::from_f64(keep)),
        };
        Ok(Self {
            keep: keep_values,
            scaling,
            threshold: threshold(keep),
            train_scale,
            eval_scale,
            mask: BitMask::default(),
            weight: Matrix::zeros(0, 0),
            masked: false,
        })
    }

    pub fn keep(&self) -> &Keep {
        &self.keep
    }

    pub fn scaling(&self) -> Scaling {
        self.scaling
    }

    /// The weight mask of the last masked pass (`out × in`).
    pub fn mask(&self) -> &BitMask {
        &self.mask
    }

    /// The weights the last pass used: `s·M ⊙ W` with a fresh mask from `draw` (its `first_row`
    /// is ignored: row j is output unit j), or `e·W` in evaluation (`draw = None`).
    pub fn weights(&mut self, w: &Matrix<T>, draw: Option<&MaskDraw>) -> &Matrix<T> {
        let (out, inp) = w.shape();
        self.weight.ensure_shape(out, inp);
        self.masked = draw.is_some();
        if let Some(draw) = draw {
            let draw = MaskDraw { first_row: 0, ..*draw };
            self.mask.draw(out, inp, &draw, &vec![self.threshold; inp]);
        }
        if inp == 0 {
            return &self.weight;
        }
        let (mask, masked, s, e) = (&self.mask, self.masked, self.train_scale, self.eval_scale);
        let rows = self.weight.as_mut_slice().par_chunks_mut(inp).zip(w.as_slice().par_chunks(inp));
        rows.enumerate().with_min_len(MIN_ROWS_PER_TASK).for_each(|(j, (o, w))| {
            if !masked {
                o.iter_mut().zip(w).for_each(|(o, &w)| *o = e * w);
                return;
            }
            for (word, &bits) in mask.row_words(j).iter().enumerate() {
                let units = word * 64..(word * 64 + 64).min(inp);
                for (b, (o, &w)) in o[units.clone()].iter_mut().zip(&w[units]).enumerate() {
                    *o = if bits >> b & 1 == 1 { s * w } else { T::ZERO };
                }
            }
        });
        &self.weight
    }

    /// The weights of the last pass.
    pub fn weight(&self) -> &Matrix<T> {
        &self.weight
    }

    /// `g ← g ⊙ s·M` (or `e·g` after an evaluation pass) on a block of the weight gradient
    /// (rows are output units, `cols` input units): the chain rule through the masked weights.
    ///
    /// # Safety
    /// The block (element (rows.start + r, cols.start + c) at `g + r·ldg + c`) must be valid for
    /// reads and writes, and no one else may touch it meanwhile.
    pub unsafe fn mask_gradient_block(&self, rows: Range<usize>, cols: Range<usize>, g: *mut T, ldg: usize) {
        for (r, j) in rows.enumerate() {
            // SAFETY: the caller's contract, row r of the block.
            let d = unsafe { std::slice::from_raw_parts_mut(g.add(r * ldg), cols.len()) };
            if !self.masked {
                d.iter_mut().for_each(|v| *v *= self.eval_scale);
                continue;
            }
            let words = self.mask.row_words(j);
            for (v, k) in d.iter_mut().zip(cols.clone()) {
                let kept = *v * self.train_scale;
                *v = if words[k / 64] >> (k % 64) & 1 == 1 { kept } else { T::ZERO };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;

    #[test]
    fn about_keep_of_the_weights_survive_scaled_and_the_gradient_is_masked_alike() {
        let (out, inp, keep) = (300, 200, 0.7);
        let w = Matrix::from_fn(out, inp, |j, k| 1.0 + (j * inp + k) as f64 * 1e-6);
        let mut d = DropConnect::<f64>::new(keep, Scaling::Inverted).unwrap();
        let draw = MaskDraw { seed: 3, stream: Stream::Mask, layer: 1, step: 4, first_row: 77 };
        let masked = d.weights(&w, Some(&draw)).clone();
        let n = (out * inp) as f64;
        let kept = masked.as_slice().iter().filter(|&&v| v != 0.0).count() as f64;
        // binomial(n, keep): within 4 standard deviations
        assert!((kept - n * keep).abs() < 4.0 * (n * keep * (1.0 - keep)).sqrt(), "{kept} of {n} kept");
        // a kept weight is w/keep; the mask ignores first_row (row j is output unit j)
        let bit = crate::dropout::mask_bit(&MaskDraw { first_row: 0, ..draw }, 5, 9, keep);
        assert_eq!(masked.get(5, 9), if bit { w.get(5, 9) / keep } else { 0.0 });
        let mut g = Matrix::from_fn(out, inp, |_, _| 1.0);
        // SAFETY: the whole of g, row stride inp.
        unsafe { d.mask_gradient_block(0..out, 0..inp, g.as_mut_slice().as_mut_ptr(), inp) };
        for (gv, mv) in g.as_slice().iter().zip(masked.as_slice()) {
            assert_eq!(*gv == 0.0, *mv == 0.0);
        }
        // evaluation: the expected weights (inverted: W itself; standard: keep·W)
        assert_eq!(d.weights(&w, None).as_slice(), w.as_slice());
        let mut s = DropConnect::<f64>::new(keep, Scaling::Standard).unwrap();
        assert_eq!(s.weights(&w, None).get(2, 3), keep * w.get(2, 3));
    }
}
