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
//!
//! `s·M ⊙ W` is Bernoulli dropout applied to W as if its rows were a batch, and the gradient's
//! `⊙ s·M` is that dropout's backward: the layer is [`Dropout`] on the weight matrix, with its
//! vectorised generator and bit-packed mask.

use super::{Dropout, Keep, MaskDraw, Scaling};
use crate::error::{Error, Result};
use crate::tensor::{Matrix, Scalar};
use std::ops::Range;

/// DropConnect on the weights of one dense layer, and the masked weights of its last pass.
#[derive(Clone, Debug)]
pub struct DropConnect<T: Scalar> {
    /// One keep probability for every weight.
    keep: Keep,
    /// Dropout over the `in` columns of W, built on the first pass (when `in` is known).
    dropout: Option<Dropout<T>>,
    scaling: Scaling,
    /// s·M ⊙ W (training, MC) or e·W (evaluation) of the last pass.
    weight: Matrix<T>,
}

impl<T: Scalar> DropConnect<T> {
    /// One keep probability for every weight of the layer.
    pub fn new(keep: f64, scaling: Scaling) -> Result<Self> {
        let keep = Keep::uniform(keep, 1).map_err(|e| Error::Config(format!("dropconnect: {e}")))?;
        Ok(Self { keep, dropout: None, scaling, weight: Matrix::zeros(0, 0) })
    }

    pub fn keep(&self) -> &Keep {
        &self.keep
    }

    pub fn scaling(&self) -> Scaling {
        self.scaling
    }

    /// The weight mask of the last masked pass (`out × in`; `None` before the first pass).
    pub fn mask(&self) -> Option<&super::BitMask> {
        self.dropout.as_ref().map(Dropout::mask)
    }

    /// The weights of this pass: `s·M ⊙ W` with a fresh mask from `draw` (its `first_row` is
    /// ignored: row j is output unit j), or `e·W` in evaluation (`draw = None`).
    pub fn weights(&mut self, w: &Matrix<T>, draw: Option<&MaskDraw>) -> Result<&Matrix<T>> {
        let inputs = w.cols();
        if self.dropout.as_ref().is_none_or(|d| d.keep().units() != inputs) {
            let keep = Keep::uniform(self.keep.values()[0], inputs)?;
            self.dropout = Some(Dropout::new(keep, self.scaling));
        }
        let dropout = self.dropout.as_mut().expect("set above");
        let draw = draw.map(|d| MaskDraw { first_row: 0, ..*d });
        dropout.forward(w, &mut self.weight, draw.as_ref())?;
        Ok(&self.weight)
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
        if let Some(dropout) = &self.dropout {
            // SAFETY: the caller's contract, passed on.
            unsafe { dropout.backward_block_in_place(rows, cols, g, ldg) };
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
        let masked = d.weights(&w, Some(&draw)).unwrap().clone();
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
        assert_eq!(d.weights(&w, None).unwrap().as_slice(), w.as_slice());
        let mut s = DropConnect::<f64>::new(keep, Scaling::Standard).unwrap();
        assert_eq!(s.weights(&w, None).unwrap().get(2, 3), keep * w.get(2, 3));
    }
}
