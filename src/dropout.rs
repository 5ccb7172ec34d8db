//! Dropout on a layer's input: keep probabilities, the two scaling conventions, bit-packed masks.
//!
//! With `r[i,k] ~ Bernoulli(keep[k])` (seed 000, forward):
//! ```text
//! inverted:  train  a_tilde[i,k] = r[i,k] / keep[k] * a[i,k]     eval  a_tilde = a
//! standard:  train  a_tilde[i,k] = r[i,k] * a[i,k]               eval  a_tilde[i,k] = keep[k] * a[i,k]
//! ```
//! Both give `E[a_tilde] ` equal to the eval value, so a network trained with one convention and
//! evaluated with the same one sees, in expectation, the pre-activations it was trained on.
//! Backward is the chain rule through the same step (seed 000, last line of the summary; the forum
//! thread of seed 001 is the user who forgot the `1/keep`): `da[i,k] = da_tilde[i,k] * r[i,k] / keep[k]`
//! (inverted) or `da_tilde[i,k] * r[i,k]` (standard), and through the eval scaling in eval mode.

use crate::error::{shape, Error, Result};
use crate::rng::{counter, key, philox4x32_10, Stream};
use crate::tensor::{Matrix, Scalar};
use rayon::prelude::*;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// Where the scaling by `keep` happens (seed 002 describes both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// Scale kept units by `1/keep` in training; evaluation is untouched.
    #[default]
    Inverted,
    /// No scaling in training; evaluation multiplies by `keep`.
    Standard,
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
    /// Index of the dense layer whose input is dropped (0 = the network's input).
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

/// A `rows × cols` matrix of mask bits, packed 64 to a word, each row starting on a new word.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BitMask {
    rows: usize,
    cols: usize,
    words_per_row: usize,
    words: Vec<u64>,
}

impl BitMask {
    /// A mask that drops everything.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        let words_per_row = cols.div_ceil(64);
        Self { rows, cols, words_per_row, words: vec![0; rows * words_per_row] }
    }

    /// A mask from bools, row-major (for tests and teaching).
    pub fn from_bools(rows: usize, cols: usize, bits: &[bool]) -> Result<Self> {
        if bits.len() != rows * cols {
            return Err(shape("BitMask::from_bools", format!("{} bits for {rows}x{cols}", bits.len())));
        }
        let mut m = Self::zeros(rows, cols);
        for (index, &bit) in bits.iter().enumerate() {
            m.set(index / cols, index % cols, bit);
        }
        Ok(m)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of storage: 1 bit per unit, rounded up to 64 bits per row.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    #[inline]
    pub fn get(&self, i: usize, k: usize) -> bool {
        self.words[i * self.words_per_row + k / 64] >> (k % 64) & 1 == 1
    }

    pub fn set(&mut self, i: usize, k: usize, bit: bool) {
        let word = &mut self.words[i * self.words_per_row + k / 64];
        if bit {
            *word |= 1 << (k % 64);
        } else {
            *word &= !(1 << (k % 64));
        }
    }

    /// Kept units (1 bits) in column `k`.
    pub fn column_count(&self, k: usize) -> usize {
        (0..self.rows).filter(|&i| self.get(i, k)).count()
    }

    /// Resize to `rows × cols` (reusing the allocation when possible) and fill with the bits of
    /// `draw` for thresholds `thresholds[k]`. Rows are independent, so they are drawn in parallel;
    /// the bits do not depend on the number of threads.
    pub fn draw(&mut self, rows: usize, cols: usize, draw: &MaskDraw, thresholds: &[u64]) {
        debug_assert_eq!(thresholds.len(), cols);
        self.rows = rows;
        self.cols = cols;
        self.words_per_row = cols.div_ceil(64);
        self.words.resize(rows * self.words_per_row, 0);
        let philox_key = key(draw.seed);
        let words_per_row = self.words_per_row;
        if words_per_row == 0 {
            return;
        }
        self.words.par_chunks_mut(words_per_row).enumerate().for_each(|(i, row_words)| {
            let row = draw.first_row.wrapping_add(i as u32);
            row_words.fill(0);
            for block in 0..cols.div_ceil(4) {
                let ctr = counter(draw.stream, draw.layer, draw.step, row, block as u32);
                let random = philox4x32_10(ctr, philox_key);
                for (lane, &word) in random.iter().enumerate() {
                    let k = block * 4 + lane;
                    if k < cols && (word as u64) < thresholds[k] {
                        row_words[k / 64] |= 1 << (k % 64);
                    }
                }
            }
        });
    }
}

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
        let (train_scale, eval_scale) = keep
            .values()
            .iter()
            .map(|&p| match scaling {
                Scaling::Inverted => (T::from_f64(1.0 / p), T::ONE),
                Scaling::Standard => (T::ONE, T::from_f64(p)),
            })
            .unzip();
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

    /// `da[i,k] = da_tilde[i,k] · r[i,k] / keep[k]` (seed 000, last line of the summary), or the
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

/// Rows per parallel task: enough elements (≥ 16 Ki) that rayon's overhead does not show.
fn rows_per_task(cols: usize) -> usize {
    (16 * 1024 / cols.max(1)).max(1)
}

/// `out[i,k] = x[i,k] · scale[k]` where the mask bit is 1, else 0. Forward (with a given mask) and
/// backward share it, which is why they always use the same bits. Rows run in parallel.
fn apply_mask<T: Scalar>(mask: &BitMask, scale: &[T], x: &Matrix<T>, out: &mut Matrix<T>) {
    let cols = x.cols();
    if cols == 0 {
        return;
    }
    let wpr = mask.words_per_row;
    let stream = streams(out.as_slice(), cols);
    let per_task = rows_per_task(cols);
    out.as_mut_slice()
        .par_chunks_mut(cols * per_task)
        .zip(x.as_slice().par_chunks(cols * per_task))
        .zip(mask.words.par_chunks(wpr * per_task))
        .for_each(|((o, xr), bits)| {
            for ((o, xr), bits) in o.chunks_mut(cols).zip(xr.chunks(cols)).zip(bits.chunks(wpr)) {
                mask_row(bits, scale, xr, o, stream);
            }
            if stream {
                fence_streaming_stores();
            }
        });
}

/// `x[j] = x[j] · scale[j]` where mask bit (`row`, `start + j`) is 1, else 0: a run of a row that
/// starts at column `start`. The columns up to the next whole mask word are done one by one, the
/// rest by the row kernel.
fn mask_segment_in_place<T: Scalar>(mask: &BitMask, row: usize, start: usize, scale: &[T], x: &mut [T]) {
    let lead = ((64 - start % 64) % 64).min(x.len());
    for (j, (v, &s)) in x[..lead].iter_mut().zip(scale).enumerate() {
        *v = if mask.get(row, start + j) { *v * s } else { T::ZERO };
    }
    let wpr = mask.words_per_row;
    let bits = &mask.words[row * wpr..(row + 1) * wpr];
    let aligned = (start + lead).div_ceil(64).min(wpr);
    mask_row_in_place(&bits[aligned..], &scale[lead..], &mut x[lead..]);
}

/// `s` read as f32 values, when T is f32 (for the f32-only intrinsics kernels).
fn as_f32<T: Scalar>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (checked), so the memory holds `s.len()` valid f32 values.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr() as *const f32, s.len()) })
}

/// [`as_f32`] for a slice that is written.
fn as_f32_mut<T: Scalar>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`; the slice's exclusive borrow moves to the result.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut f32, s.len()) })
}

/// Whether a pass writes `out` (rows of `cols` values) with non-temporal stores: only outputs
/// larger than the last-level cache (they would only evict it on their way to memory), and only
/// when every row can start on a 64-byte boundary.
fn streams<T>(out: &[T], cols: usize) -> bool {
    std::mem::size_of_val(out) > STREAMING_BYTES && cols.is_multiple_of(16)
}

/// Non-temporal stores are weakly ordered: each parallel task that made some ends with a fence,
/// before the join that hands its rows to other threads.
fn fence_streaming_stores() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86_64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// One row of [`apply_mask`]: `out[k] = x[k] · scale[k]` where bit k is set, else 0. With
/// `stream`, f32 rows that start on a 64-byte boundary are written with non-temporal stores (the
/// caller fences them).
#[inline]
fn mask_row<T: Scalar>(bits: &[u64], scale: &[T], x: &[T], out: &mut [T], stream: bool) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512() {
        if let (true, Some(scale), Some(x), Some(out)) = (stream, as_f32(scale), as_f32(x), as_f32_mut(out)) {
            // SAFETY: `cpu::avx512()` checks every feature the kernel is compiled with.
            return unsafe { avx512::mask_row_f32_stream(bits, scale, x, out) };
        }
        // SAFETY: as above.
        return unsafe { mask_row_avx512(bits, scale, x, out) };
    }
    mask_row_portable(bits, scale, x, out)
}

/// The same as [`mask_row`] with `out` = `x`.
#[inline]
fn mask_row_in_place<T: Scalar>(bits: &[u64], scale: &[T], x: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512() {
        // SAFETY: `cpu::avx512()` checks every feature the kernel is compiled with.
        return unsafe { mask_row_in_place_avx512(bits, scale, x) };
    }
    mask_row_in_place_portable(bits, scale, x)
}

// The row kernels are written once, without branches on the data (a select per element, 64 units per
// mask word), and compiled twice: for the baseline target and with AVX-512 enabled, where the
// compiler turns each group of 16 units into one masked vector multiply.

#[inline(always)]
fn mask_row_portable<T: Scalar>(bits: &[u64], scale: &[T], x: &[T], out: &mut [T]) {
    let groups = out.chunks_mut(64).zip(x.chunks(64)).zip(scale.chunks(64));
    for (&word, ((o64, x64), s64)) in bits.iter().zip(groups) {
        for (j, ((o, &v), &s)) in o64.iter_mut().zip(x64).zip(s64).enumerate() {
            *o = if word >> j & 1 == 1 { v * s } else { T::ZERO };
        }
    }
}

#[inline(always)]
fn mask_row_in_place_portable<T: Scalar>(bits: &[u64], scale: &[T], x: &mut [T]) {
    for (&word, (x64, s64)) in bits.iter().zip(x.chunks_mut(64).zip(scale.chunks(64))) {
        for (j, (v, &s)) in x64.iter_mut().zip(s64).enumerate() {
            *v = if word >> j & 1 == 1 { *v * s } else { T::ZERO };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,bmi2")]
unsafe fn mask_row_avx512<T: Scalar>(bits: &[u64], scale: &[T], x: &[T], out: &mut [T]) {
    mask_row_portable(bits, scale, x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,bmi2")]
unsafe fn mask_row_in_place_avx512<T: Scalar>(bits: &[u64], scale: &[T], x: &mut [T]) {
    mask_row_in_place_portable(bits, scale, x)
}

/// The fused training pass: draw each row's mask bits (as [`BitMask::draw`] does, four units per
/// Philox call) and write `out = r · scale · x` in the same sweep, rows in parallel. The bits are
/// stored for backward; the result is the same as `draw` followed by [`apply_mask`].
fn draw_and_apply<T: Scalar>(
    mask: &mut BitMask,
    draw: &MaskDraw,
    thresholds: &[u64],
    lanes: &LaneThresholds,
    scale: &[T],
    x: &Matrix<T>,
    out: &mut Matrix<T>,
) {
    let (rows, cols) = x.shape();
    mask.rows = rows;
    mask.cols = cols;
    mask.words_per_row = cols.div_ceil(64);
    mask.words.resize(rows * mask.words_per_row, 0);
    if cols == 0 {
        return;
    }
    let philox_key = key(draw.seed);
    let stream = streams(out.as_slice(), cols);
    let per_task = rows_per_task(cols);
    let words = mask.words_per_row;
    out.as_mut_slice()
        .par_chunks_mut(cols * per_task)
        .zip(x.as_slice().par_chunks(cols * per_task))
        .zip(mask.words.par_chunks_mut(words * per_task))
        .enumerate()
        .for_each(|(task, ((o, xr), bits))| {
            let first = draw.first_row.wrapping_add((task * per_task) as u32);
            let rows =
                RowsDraw { ctr: counter(draw.stream, draw.layer, draw.step, first, 0), key: philox_key, thresholds };
            draw_rows(&rows, lanes, scale, xr, o, bits, stream);
            if stream {
                fence_streaming_stores();
            }
        });
}

/// The rows of one task of the fused pass on the fastest path this CPU has.
fn draw_rows<T: Scalar>(
    rows: &RowsDraw<'_>,
    lanes: &LaneThresholds,
    scale: &[T],
    xr: &[T],
    o: &mut [T],
    bits: &mut [u64],
    stream: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512() {
        if let (Some(scale), Some(xr), Some(out)) = (as_f32(scale), as_f32(xr), as_f32_mut(o)) {
            // SAFETY: `cpu::avx512()` checks every feature the kernel is compiled with.
            return unsafe { avx512::draw_rows_f32(rows, lanes, scale, xr, out, bits, stream) };
        }
        // SAFETY: as above.
        return unsafe { draw_rows_avx512(rows, scale, xr, o, bits) };
    }
    draw_rows_portable(rows, scale, xr, o, bits)
}

/// The thresholds rearranged for the 16-lane kernel. Group g covers units 64g..64g+63; its 64 u32
/// thresholds are stored as 4 rows (Philox output word w) of 16 (block b), for unit 64g + 4b + w.
/// Units with keep = 1 (threshold 2^32, which no u32 holds) are listed in `always`; `valid` marks
/// the units that exist in the last, partial group.
#[derive(Clone, Debug)]
struct LaneThresholds {
    t32: Vec<u32>,
    always: Vec<u64>,
    valid: Vec<u64>,
}

impl LaneThresholds {
    fn new(thresholds: &[u64]) -> Self {
        let groups = thresholds.len().div_ceil(64);
        let mut lanes = Self { t32: vec![0; groups * 64], always: vec![0; groups], valid: vec![0; groups] };
        for (k, &t) in thresholds.iter().enumerate() {
            let (g, b, w) = (k / 64, (k % 64) / 4, k % 4);
            lanes.valid[g] |= 1 << (k % 64);
            if t > u32::MAX as u64 {
                lanes.always[g] |= 1 << (k % 64);
            } else {
                lanes.t32[g * 64 + w * 16 + b] = t as u32;
            }
        }
        lanes
    }
}

/// Output size above which the fused pass streams its stores past the cache (this machine's L3 is
/// 32 MiB; W1's batches are far below, W2's 128 MiB tensor far above).
const STREAMING_BYTES: usize = 64 << 20;

/// What the masks of consecutive rows depend on: the counter of the first row's block 0 (row r's
/// is the same with the row word advanced by r), the key and the thresholds.
struct RowsDraw<'a> {
    ctr: [u32; 4],
    key: [u32; 2],
    thresholds: &'a [u64],
}

impl RowsDraw<'_> {
    /// The counter of block 0 of row `r` (the row is word 1 of the counter, see `rng::counter`).
    fn ctr(&self, r: usize) -> [u32; 4] {
        let mut ctr = self.ctr;
        ctr[1] = ctr[1].wrapping_add(r as u32);
        ctr
    }
}

/// The rows of one task of the fused pass, in order: each row's output, input and mask words.
#[inline(always)]
fn task_rows<'a, T>(
    out: &'a mut [T],
    x: &'a [T],
    bits: &'a mut [u64],
    cols: usize,
) -> impl Iterator<Item = (&'a mut [T], &'a [T], &'a mut [u64])> {
    out.chunks_mut(cols).zip(x.chunks(cols)).zip(bits.chunks_mut(cols.div_ceil(64))).map(|((o, x), b)| (o, x, b))
}

/// Philox4x32-10 of the 16 consecutive blocks `block0 ..= block0 + 15` of one row, computed side by
/// side (word w of block b is `out[w][b]`), so that the compiler can run the 16 rounds in vector
/// lanes. Bit for bit the same as [`philox4x32_10`] on each block.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane-indexed on purpose: the loops are the vector lanes
fn philox_x16(ctr: [u32; 4], block0: u32, key: [u32; 2]) -> [[u32; 16]; 4] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    let mut c: [[u32; 16]; 4] = [[0; 16], [ctr[1]; 16], [ctr[2]; 16], [ctr[3]; 16]];
    for (b, c0) in c[0].iter_mut().enumerate() {
        *c0 = block0.wrapping_add(b as u32);
    }
    let mut k = key;
    for r in 0..10 {
        if r > 0 {
            k = [k[0].wrapping_add(0x9E37_79B9), k[1].wrapping_add(0xBB67_AE85)];
        }
        for b in 0..16 {
            let p0 = M0 * c[0][b] as u64;
            let p1 = M1 * c[2][b] as u64;
            let next = [(p1 >> 32) as u32 ^ c[1][b] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3][b] ^ k[1], p0 as u32];
            for w in 0..4 {
                c[w][b] = next[w];
            }
        }
    }
    c
}

/// One row of the fused pass: the mask words from 16 Philox blocks (64 units) at a time, then the
/// scaled copy through the same bits while the row is still in L1.
#[inline(always)]
fn draw_row_portable<T: Scalar>(
    ctr: [u32; 4],
    rows: &RowsDraw<'_>,
    scale: &[T],
    x: &[T],
    out: &mut [T],
    bits: &mut [u64],
) {
    let cols = x.len();
    for (g, word) in bits.iter_mut().enumerate() {
        let random = philox_x16(ctr, (g * 16) as u32, rows.key);
        let mut w = 0u64;
        for b in 0..16 {
            for (lane, words) in random.iter().enumerate() {
                let k = g * 64 + 4 * b + lane;
                if k < cols && (words[b] as u64) < rows.thresholds[k] {
                    w |= 1 << (4 * b + lane);
                }
            }
        }
        *word = w;
    }
    mask_row_portable(bits, scale, x, out);
}

/// The fused pass over whole rows (`x` and `out` hold `bits.len() / words per row` rows).
#[inline(always)]
fn draw_rows_portable<T: Scalar>(rows: &RowsDraw<'_>, scale: &[T], x: &[T], out: &mut [T], bits: &mut [u64]) {
    for (r, (o, xr, b)) in task_rows(out, x, bits, scale.len()).enumerate() {
        draw_row_portable(rows.ctr(r), rows, scale, xr, o, b);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,bmi2")]
unsafe fn draw_rows_avx512<T: Scalar>(rows: &RowsDraw<'_>, scale: &[T], x: &[T], out: &mut [T], bits: &mut [u64]) {
    draw_rows_portable(rows, scale, x, out, bits)
}

/// The fused dropout pass for f32 with AVX-512 intrinsics: 16 Philox blocks as two vectors, the
/// threshold compare as a vector mask, the 64 mask bits interleaved with BMI2 `pdep`, and the scaled
/// copy as masked multiplies. Bit for bit the same as the portable path (tested).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{mask_row_portable, task_rows, LaneThresholds, RowsDraw};
    use std::arch::x86_64::*;

    /// Philox's constants and the ten round keys of one key, broadcast once per row.
    struct Rounds {
        m0: __m512i,
        m1: __m512i,
        keys: [[__m512i; 2]; 10],
    }

    impl Rounds {
        #[inline(always)]
        unsafe fn new(key: [u32; 2]) -> Self {
            let mut k = key;
            let mut keys = [[_mm512_setzero_si512(); 2]; 10];
            for (r, round_key) in keys.iter_mut().enumerate() {
                if r > 0 {
                    k = [k[0].wrapping_add(0x9E37_79B9), k[1].wrapping_add(0xBB67_AE85)];
                }
                *round_key = [_mm512_set1_epi32(k[0] as i32), _mm512_set1_epi32(k[1] as i32)];
            }
            let m0 = _mm512_set1_epi32(0xD251_1F53u32 as i32);
            let m1 = _mm512_set1_epi32(0xCD9E_8D57u32 as i32);
            Self { m0, m1, keys }
        }
    }

    /// Ten Philox rounds on 8 blocks whose four words sit in the low halves of 64-bit lanes.
    ///
    /// `_mm512_mul_epu32` multiplies the low halves of the 64-bit lanes into a full 64-bit product:
    /// its high half is `hi` and its low half is `lo` of Philox's mulhilo, already in place, so a
    /// round is two multiplies, two shifts and two three-way XORs. What the high halves of the
    /// lanes hold in between does not matter: the multiplies never read it, and only the low halves
    /// are compared at the end. (Keeping 16 blocks in 32-bit lanes instead needs two multiplies
    /// and two permutes per mulhilo to put hi and lo back in lane order; this layout cut the
    /// criterion bench `dropout forward 128x1024` at 1 thread from 163 to 124 µs.)
    #[inline(always)]
    unsafe fn philox_rounds(mut c: [__m512i; 4], rounds: &Rounds) -> [__m512i; 4] {
        const XOR3: i32 = 0x96; // ternary-logic truth table of a ^ b ^ c
        for [k0, k1] in rounds.keys {
            let p0 = _mm512_mul_epu32(c[0], rounds.m0);
            let p1 = _mm512_mul_epu32(c[2], rounds.m1);
            let n0 = _mm512_ternarylogic_epi32::<XOR3>(_mm512_srli_epi64::<32>(p1), c[1], k0);
            let n2 = _mm512_ternarylogic_epi32::<XOR3>(_mm512_srli_epi64::<32>(p0), c[3], k1);
            c = [n0, p1, n2, p0];
        }
        c
    }

    /// Mask bits of units 64g..64g+63 of one row (bit j = unit 64g + j). The 16 blocks of the
    /// group run as two vectors of 8: the even blocks 0, 2, .., 14 and the odd ones 1, 3, .., 15.
    #[inline(always)]
    unsafe fn group_bits(ctr: [u32; 4], rounds: &Rounds, lanes: &LaneThresholds, g: usize) -> u64 {
        let block0 = _mm512_add_epi64(_mm512_set1_epi64((g * 16) as i64), _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14));
        let words = |c0: __m512i| {
            let rest = ctr[1..].iter().map(|&w| _mm512_set1_epi64(w as i64));
            let mut c = [c0; 4];
            for (c, w) in c[1..].iter_mut().zip(rest) {
                *c = w;
            }
            c
        };
        // (the block number may carry into a lane's high half; only the low half is read)
        let even = philox_rounds(words(block0), rounds);
        let odd = philox_rounds(words(_mm512_add_epi64(block0, _mm512_set1_epi64(1))), rounds);
        let t = lanes.t32[g * 64..].as_ptr();
        let mut bits = 0;
        for w in 0..4 {
            // 32-bit lane 2j holds block 2j (even) or 2j+1 (odd); threshold of block b in lane b
            let thresholds = _mm512_loadu_si512(t.add(w * 16) as *const __m512i);
            let even_kept = _mm512_cmplt_epu32_mask(even[w], thresholds) & 0x5555;
            let odd_kept = _mm512_cmplt_epu32_mask(odd[w], _mm512_srli_epi64::<32>(thresholds)) & 0x5555;
            // bit b of `kept` is word w of block b, which is unit 64g + 4b + w: spread the 16
            // bits to every fourth bit
            let kept = (even_kept | odd_kept << 1) as u64;
            bits |= _pdep_u64(kept, 0x1111_1111_1111_1111 << w);
        }
        (bits | lanes.always[g]) & lanes.valid[g]
    }

    /// Whole rows (`x` and `out` hold `bits.len() / words per row` rows): mask words from the
    /// generator, then `out = r · scale · x`. With `stream`, the full vectors of rows that start
    /// on a 64-byte boundary are written with non-temporal stores (other rows, and a row's partial
    /// last group, through the cache), and the caller fences them (`_mm_sfence`) before other
    /// threads read.
    ///
    /// The round keys are broadcast once per call, not per row: they do not fit in registers
    /// beside the state, and spilling them again for every row put 20 vector stores in the
    /// way of the streaming stores (a tenth of the profile of W2's forward was stalled there).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,bmi2")]
    pub unsafe fn draw_rows_f32(
        rows: &RowsDraw<'_>,
        lanes: &LaneThresholds,
        scale: &[f32],
        x: &[f32],
        out: &mut [f32],
        bits: &mut [u64],
        stream: bool,
    ) {
        let rounds = Rounds::new(rows.key);
        for (r, (o, xr, b)) in task_rows(out, x, bits, scale.len()).enumerate() {
            draw_row_f32(rows.ctr(r), &rounds, lanes, scale, xr, o, b, stream);
        }
    }

    /// One row of [`draw_rows_f32`].
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn draw_row_f32(
        ctr: [u32; 4],
        rounds: &Rounds,
        lanes: &LaneThresholds,
        scale: &[f32],
        x: &[f32],
        out: &mut [f32],
        bits: &mut [u64],
        stream: bool,
    ) {
        let stream = stream && (out.as_ptr() as usize).is_multiple_of(64);
        let full = x.len() / 64;
        for (g, word) in bits.iter_mut().enumerate() {
            prefetch_ahead(x.as_ptr().wrapping_add(g * 64));
            // (a local copy: read back through `word`, the bits would be reloaded after every
            // store to `out`, which the compiler cannot prove is elsewhere)
            let kept_bits = group_bits(ctr, rounds, lanes, g);
            *word = kept_bits;
            if g < full {
                scaled_copy(kept_bits, 4, g * 64, scale, x, out, stream);
            }
        }
        if full < bits.len() {
            let at = full * 64;
            mask_row_portable(&bits[full..], &scale[at..], &x[at..], &mut out[at..]);
        }
    }

    /// How far ahead of the group being drawn the fused pass asks for its input: 2 KiB, eight
    /// groups. The generator keeps the core busy for about 55 cycles per group; with only the
    /// hardware prefetcher, the pass took about the generator's time plus the copy's, as if the
    /// loads of `x` waited on memory after the generator rather than during it. In-process A/B
    /// on W2 (harness in BENCHMARKS.md, seventh session): 512 to 2048 bytes ahead gave 1–27%
    /// more forward GB/s in every run; 4096 bytes, one 1024-float row, gave nothing (0.87–1.00).
    const PREFETCH_AHEAD_BYTES: usize = 2048;

    /// Asks for the four cache lines of input [`PREFETCH_AHEAD_BYTES`] past `at`. A prefetch
    /// never faults, so the address may lie past the end of the rows (hence `wrapping_add`).
    #[inline(always)]
    fn prefetch_ahead(at: *const f32) {
        let ahead = (at as *const i8).wrapping_add(PREFETCH_AHEAD_BYTES);
        for line in 0..4 {
            // SAFETY: SSE is part of x86_64, and a prefetch reads nothing the program can see.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line)) };
        }
    }

    /// `out = r · scale · x` for one row with non-temporal stores, for outputs larger than the
    /// cache (W2's backward writes 128 MiB): without the read-for-ownership of each output line,
    /// the pass moves 8 bytes per value instead of 12. Rows that do not start on a 64-byte
    /// boundary or hold a partial vector take the cached path.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,bmi2")]
    pub unsafe fn mask_row_f32_stream(bits: &[u64], scale: &[f32], x: &[f32], out: &mut [f32]) {
        if !(out.as_ptr() as usize).is_multiple_of(64) || !out.len().is_multiple_of(16) {
            return mask_row_portable(bits, scale, x, out);
        }
        for (g, &word) in bits.iter().enumerate() {
            let vectors = ((out.len() - g * 64) / 16).min(4);
            scaled_copy(word, vectors, g * 64, scale, x, out, true);
        }
    }

    /// `out = r · scale · x` over `vectors` (≤ 4) vectors of 16 values from `at`, the mask bits of
    /// vector q being bits 16q..16q+15 of `word`. With `stream`, non-temporal stores (`out` + `at`
    /// on a 64-byte boundary).
    #[inline(always)]
    unsafe fn scaled_copy(
        word: u64,
        vectors: usize,
        at: usize,
        scale: &[f32],
        x: &[f32],
        out: &mut [f32],
        stream: bool,
    ) {
        for q in 0..vectors {
            let at = at + q * 16;
            let kept = (word >> (16 * q)) as u16;
            let v =
                _mm512_maskz_mul_ps(kept, _mm512_loadu_ps(x.as_ptr().add(at)), _mm512_loadu_ps(scale.as_ptr().add(at)));
            if stream {
                _mm512_stream_ps(out.as_mut_ptr().add(at), v);
            } else {
                _mm512_storeu_ps(out.as_mut_ptr().add(at), v);
            }
        }
    }
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

    #[test]
    fn vector_and_portable_row_kernels_agree_bit_for_bit() {
        let cols = 200;
        let x: Vec<f32> = (0..cols).map(|k| k as f32 * 0.37 - 20.0).collect();
        let scale: Vec<f32> = (0..cols).map(|k| 1.0 / (0.3 + (k % 7) as f32 * 0.1)).collect();
        let bits = [0xdead_beef_0123_4567u64, 0xffff_0000_ffff_0000, 0x8000_0000_0000_0001, 0x5555];
        let (mut a, mut b) = (vec![0.0f32; cols], vec![0.0f32; cols]);
        mask_row(&bits, &scale, &x, &mut a, false);
        mask_row_portable(&bits, &scale, &x, &mut b);
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let mut c = x.clone();
        mask_row_in_place(&bits, &scale, &mut c);
        assert_eq!(c, a);
        assert!(a.iter().filter(|v| **v == 0.0).count() > 50 && a.iter().filter(|v| **v != 0.0).count() > 50);
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn sixteen_wide_philox_equals_one_block_at_a_time() {
        let ctr = counter(Stream::Mask, 3, 99, 12345, 0);
        let k = key(0xfeed_f00d_1234_5678);
        let wide = philox_x16(ctr, 48, k);
        for b in 0..16 {
            let single = philox4x32_10([48 + b as u32, ctr[1], ctr[2], ctr[3]], k);
            assert_eq!([wide[0][b], wide[1][b], wide[2][b], wide[3][b]], single);
        }
    }

    #[test]
    fn vector_and_portable_fused_rows_agree_bit_for_bit() {
        let cols = 150;
        let thresholds: Vec<u64> = (0..cols).map(|k| threshold(0.1 + 0.9 * (k % 10) as f64 / 9.0)).collect();
        let rows = RowsDraw { ctr: counter(Stream::Mask, 1, 2, 3, 0), key: key(4), thresholds: &thresholds };
        let x: Vec<f64> = (0..2 * cols).map(|k| k as f64 - 70.5).collect();
        let scale: Vec<f64> = (0..cols).map(|k| 1.0 + k as f64 / 100.0).collect();
        let (mut out_a, mut bits_a) = (vec![0.0; 2 * cols], vec![0u64; 6]);
        let (mut out_b, mut bits_b) = (vec![0.0; 2 * cols], vec![0u64; 6]);
        draw_rows_portable(&rows, &scale, &x, &mut out_a, &mut bits_a);
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::detected_avx512() {
            unsafe { draw_rows_avx512(&rows, &scale, &x, &mut out_b, &mut bits_b) };
            assert_eq!((out_a, bits_a), (out_b, bits_b));
        }
    }

    #[test]
    fn the_f32_intrinsics_kernel_equals_the_portable_one() {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::detected_avx512() {
            for cols in [64, 150, 1024, 7] {
                let n_rows = 3;
                // keep 1 on some units, tiny keep on others, to reach both ends of the threshold rule
                let keep: Vec<f64> = (0..cols).map(|k| [1.0, 0.5, 1e-12, 0.8, 0.999999][k % 5]).collect();
                let thresholds: Vec<u64> = keep.iter().map(|&p| threshold(p)).collect();
                let lanes = LaneThresholds::new(&thresholds);
                let rows = RowsDraw { ctr: counter(Stream::McMask, 9, 8, 7, 0), key: key(6), thresholds: &thresholds };
                let x: Vec<f32> = (0..n_rows * cols).map(|k| k as f32 * 0.5 - 3.0).collect();
                let scale: Vec<f32> = keep.iter().map(|&p| (1.0 / p) as f32).collect();
                let words = n_rows * cols.div_ceil(64);
                let (mut out_a, mut bits_a) = (vec![0.0f32; n_rows * cols], vec![0u64; words]);
                let (mut out_b, mut bits_b) = (vec![0.0f32; n_rows * cols], vec![0u64; words]);
                draw_rows_portable(&rows, &scale, &x, &mut out_a, &mut bits_a);
                unsafe { avx512::draw_rows_f32(&rows, &lanes, &scale, &x, &mut out_b, &mut bits_b, false) };
                assert_eq!(bits_a, bits_b, "{cols} columns");
                assert_eq!(out_a, out_b, "{cols} columns");
                // the streaming stores write the same values (64-byte aligned rows of 16k values)
                if cols % 16 == 0 {
                    let mut aligned = Matrix::<f32>::zeros(n_rows, cols);
                    let mut bits_c = vec![0u64; words];
                    unsafe {
                        avx512::draw_rows_f32(&rows, &lanes, &scale, &x, aligned.as_mut_slice(), &mut bits_c, true)
                    };
                    assert_eq!((aligned.as_slice(), &bits_c), (&out_a[..], &bits_a));
                }
            }
        }
    }

    #[test]
    fn the_streaming_mask_kernel_equals_the_cached_one() {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::detected_avx512() {
            for cols in [64usize, 1024, 160, 150] {
                let bits: Vec<u64> =
                    (0..cols.div_ceil(64)).map(|g| 0x9E37_79B9_7F4A_7C15u64.rotate_left(g as u32 * 7)).collect();
                let scale: Vec<f32> = (0..cols).map(|k| 1.0 + k as f32 / 64.0).collect();
                let x: Vec<f32> = (0..cols).map(|k| k as f32 - 20.25).collect();
                let mut cached = vec![0.0f32; cols];
                mask_row_portable(&bits, &scale, &x, &mut cached);
                // a 64-byte aligned row (streaming stores) and, for 150, a partial last vector
                let mut aligned = Matrix::<f32>::zeros(1, cols);
                unsafe { avx512::mask_row_f32_stream(&bits, &scale, &x, aligned.as_mut_slice()) };
                assert_eq!(aligned.as_slice(), &cached[..], "{cols} columns");
            }
        }
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
