//! The update of a weight matrix made block by block while the product that computes its gradient
//! finishes each block: the gradient is read from cache and never stored.

use super::rules::{max_norm, update_chunk, Slots, StepParams};
use super::Method;
use std::ops::Range;

/// The update of one weight matrix (rows of `width` values) made block by block, as the product
/// computing its gradient finishes each block (see [`crate::tensor::matmul_then`]).
pub struct BlockUpdate {
    v: *mut f32,
    s: *mut f32,
    rows: usize,
    width: usize,
    p: StepParams,
    norm_limit: Option<f32>,
}

// SAFETY: the pointers are used only in `apply`, whose callers hand each block to one thread.
unsafe impl Sync for BlockUpdate {}

impl BlockUpdate {
    /// The update of a `rows × width` weight matrix with these slots (fitted to it here) by step
    /// `p`, weight decay included, and max-norm when `norm_limit` is given.
    pub fn new(slots: &mut Slots, (rows, width): (usize, usize), p: StepParams, norm_limit: Option<f32>) -> Self {
        slots.fit(rows * width);
        Self { v: slots.first.as_mut_ptr(), s: slots.second.as_mut_ptr(), rows, width, p, norm_limit }
    }

    /// The rules of the module docs on rows `rows`, columns `cols` of the weights `w` (the whole
    /// matrix, of the shape given to `new`), with their gradient: element (rows.start + r,
    /// cols.start + j) at `g + r·ldg + j`. Max-norm needs whole rows: it runs here when `cols`
    /// spans the row and returns false otherwise, leaving it to [`max_norm`].
    ///
    /// # Safety
    /// `w` points to a matrix of the shape given to `new`, `g` to the block as above, and no other
    /// thread touches these rows and columns of w, g or the slots during the call.
    pub unsafe fn apply(&self, rows: Range<usize>, cols: Range<usize>, g: *const f32, ldg: usize, w: *mut f32) -> bool {
        let len = cols.len();
        self.prefetch_next(&rows, &cols, w);
        for (r, i) in rows.clone().enumerate() {
            let at = i * self.width + cols.start;
            // SAFETY: (i, cols) lies inside the matrices (the caller's contract), exclusively ours.
            let (w, v, s, g) = unsafe {
                (
                    std::slice::from_raw_parts_mut(w.add(at), len),
                    std::slice::from_raw_parts_mut(self.v.add(at), len),
                    std::slice::from_raw_parts_mut(self.s.add(at), len),
                    std::slice::from_raw_parts(g.add(r * ldg), len),
                )
            };
            update_chunk(w, g, v, s, &self.p, self.p.weight_decay);
        }
        let Some(c) = self.norm_limit else { return true };
        if len != self.width {
            return false;
        }
        let whole = rows.start * self.width..rows.end * self.width;
        // SAFETY: as above, whole rows.
        max_norm(unsafe { std::slice::from_raw_parts_mut(w.add(whole.start), whole.len()) }, self.width, c);
        true
    }

    /// Asks for the weights and the slots the method uses of the next strip of rows (the
    /// product's next block in the same columns) to be brought into L2: the product computes that
    /// block's gradient before its update needs them, so their load from memory overlaps the
    /// arithmetic (W1 steps about 1% faster, interleaved in-process A/B in BENCHMARKS.md).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn prefetch_next(&self, rows: &Range<usize>, cols: &Range<usize>, w: *const f32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            let (first, second) = match self.p.method {
                Method::Sgd | Method::Nesterov => (true, false),
                Method::Adam => (true, true),
                Method::Rmsprop => (false, true),
            };
            for i in rows.end..(rows.end + rows.len()).min(self.rows) {
                for j in cols.clone().step_by(16) {
                    let at = i * self.width + j;
                    // SAFETY: prefetching never faults; (i, j) lies inside all three matrices.
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T1>(w.add(at) as *const i8);
                        if first {
                            _mm_prefetch::<_MM_HINT_T1>(self.v.add(at) as *const i8);
                        }
                        if second {
                            _mm_prefetch::<_MM_HINT_T1>(self.s.add(at) as *const i8);
                        }
                    }
                }
            }
        }
    }
}
