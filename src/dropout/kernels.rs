//! The row passes of dropout, written once without branches on the data and compiled for the
//! baseline target and with AVX-512 enabled: the masked scaled copy (`apply_mask`, forward with a
//! given mask and backward), its in-place form for a product's epilogue, and the fused training
//! pass that draws each row's bits from Philox and applies them in the same sweep.

use super::{BitMask, MaskDraw};
use crate::rng::{counter, key, M0, M1, W0, W1};
use crate::tensor::{Matrix, Scalar};
use rayon::prelude::*;

/// Rows per parallel task: enough elements (≥ 16 Ki) that rayon's overhead does not show.
fn rows_per_task(cols: usize) -> usize {
    (16 * 1024 / cols.max(1)).max(1)
}

/// `out[i,k] = x[i,k] · scale[k]` where the mask bit is 1, else 0. Forward (with a given mask) and
/// backward share it, which is why they always use the same bits. Rows run in parallel.
pub(super) fn apply_mask<T: Scalar>(mask: &BitMask, scale: &[T], x: &Matrix<T>, out: &mut Matrix<T>) {
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
pub(super) fn mask_segment_in_place<T: Scalar>(mask: &BitMask, row: usize, start: usize, scale: &[T], x: &mut [T]) {
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
pub(super) fn mask_row<T: Scalar>(bits: &[u64], scale: &[T], x: &[T], out: &mut [T], stream: bool) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512() {
        if let (true, Some(scale), Some(x), Some(out)) = (stream, as_f32(scale), as_f32(x), as_f32_mut(out)) {
            // SAFETY: `cpu::avx512()` checks every feature the kernel is compiled with.
            return unsafe { super::avx512::mask_row_f32_stream(bits, scale, x, out) };
        }
        // SAFETY: as above.
        return unsafe { mask_row_avx512(bits, scale, x, out) };
    }
    mask_row_portable(bits, scale, x, out)
}

/// The same as [`mask_row`] with `out` = `x`.
#[inline]
pub(super) fn mask_row_in_place<T: Scalar>(bits: &[u64], scale: &[T], x: &mut [T]) {
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
pub(super) fn mask_row_portable<T: Scalar>(bits: &[u64], scale: &[T], x: &[T], out: &mut [T]) {
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
pub(super) fn draw_and_apply<T: Scalar>(
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
            return unsafe { super::avx512::draw_rows_f32(rows, lanes, scale, xr, out, bits, stream) };
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
pub(super) struct LaneThresholds {
    pub(super) t32: Vec<u32>,
    pub(super) always: Vec<u64>,
    pub(super) valid: Vec<u64>,
}

impl LaneThresholds {
    pub(super) fn new(thresholds: &[u64]) -> Self {
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

/// Output size above which the fused pass streams its stores past the cache: twice a 32 MiB L3,
/// far above W1's batches and far below W2's 128 MiB tensor.
const STREAMING_BYTES: usize = 64 << 20;

/// What the masks of consecutive rows depend on: the counter of the first row's block 0 (row r's
/// is the same with the row word advanced by r), the key and the thresholds.
pub(super) struct RowsDraw<'a> {
    pub(super) ctr: [u32; 4],
    pub(super) key: [u32; 2],
    pub(super) thresholds: &'a [u64],
}

impl RowsDraw<'_> {
    /// The counter of block 0 of row `r` (the row is word 1 of the counter, see `rng::counter`).
    pub(super) fn ctr(&self, r: usize) -> [u32; 4] {
        let mut ctr = self.ctr;
        ctr[1] = ctr[1].wrapping_add(r as u32);
        ctr
    }
}

/// The rows of one task of the fused pass, in order: each row's output, input and mask words.
#[inline(always)]
pub(super) fn task_rows<'a, T>(
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
pub(super) fn philox_x16(ctr: [u32; 4], block0: u32, key: [u32; 2]) -> [[u32; 16]; 4] {
    let mut c: [[u32; 16]; 4] = [[0; 16], [ctr[1]; 16], [ctr[2]; 16], [ctr[3]; 16]];
    for (b, c0) in c[0].iter_mut().enumerate() {
        *c0 = block0.wrapping_add(b as u32);
    }
    let mut k = key;
    for r in 0..10 {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        for b in 0..16 {
            let p0 = M0 as u64 * c[0][b] as u64;
            let p1 = M1 as u64 * c[2][b] as u64;
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
pub(super) fn draw_rows_portable<T: Scalar>(
    rows: &RowsDraw<'_>,
    scale: &[T],
    x: &[T],
    out: &mut [T],
    bits: &mut [u64],
) {
    for (r, (o, xr, b)) in task_rows(out, x, bits, scale.len()).enumerate() {
        draw_row_portable(rows.ctr(r), rows, scale, xr, o, b);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,bmi2")]
unsafe fn draw_rows_avx512<T: Scalar>(rows: &RowsDraw<'_>, scale: &[T], x: &[T], out: &mut [T], bits: &mut [u64]) {
    draw_rows_portable(rows, scale, x, out, bits)
}

#[cfg(test)]
mod tests {
    use super::super::threshold;
    use super::*;
    use crate::rng::{philox4x32_10, Stream};

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
        } else {
            eprintln!("skipped: this CPU lacks {}", crate::cpu::AVX512_FEATURES);
        }
    }
}
