//! Products whose A operand is read straight from a source buffer through offsets: element
//! `(r, t)` of A is `src[row[r] + off[t]]`. A convolution is such a product: with `row` the start
//! of each output position's window in the padded input and `off` each filter tap's offset in the
//! window, `A` is the im2col matrix without ever being written down (math.md, C2).
//!
//! ```text
//! tile     acc[r, j] = Σ_t src[row[r] + off[t]] · b[t·ldb + j]       r < 8, j < 32
//! ```
//!
//! The tile is the GEMM micro-kernel with its eight broadcasts taken from eight row pointers
//! instead of a packed panel: per step two loads of B, eight broadcasts and sixteen fused
//! multiply-adds, so the FMA units set the pace and nothing is packed. Two drivers use it:
//! [`rows_product`] gives each output row its own window (a convolution's forward pass and its
//! input gradient) and [`depth_product`] swaps the roles, each output row a tap and the depth the
//! positions (the weight gradient).

use super::Gemm;
use crate::scalar::Real;
use crate::shared_ptr::SharedPtr;
use rayon::prelude::*;

/// Rows of a tile.
pub const TILE_ROWS: usize = 8;
/// Columns of a tile (one packed panel of B).
pub const TILE_COLS: usize = 32;

/// One 8 × 32 tile, in the portable code (f64, and f32 without AVX-512): `c[r·ldc + j] (+)= acc`.
///
/// # Safety
/// `rows[r].offset(off[t])` is readable for every r, t; `b` holds `off.len()` rows of 32 values
/// `ldb` apart; `c` holds 8 rows of 32 values `ldc` apart.
pub(super) unsafe fn tile_portable<T: Real>(
    rows: &[*const T; TILE_ROWS],
    off: &[isize],
    b: *const T,
    ldb: usize,
    c: *mut T,
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = [[T::ZERO; TILE_COLS]; TILE_ROWS];
    for (t, &o) in off.iter().enumerate() {
        // SAFETY: the caller's contract.
        let bt = unsafe { std::slice::from_raw_parts(b.add(t * ldb), TILE_COLS) };
        for (acc_r, row) in acc.iter_mut().zip(rows) {
            let a = unsafe { *row.offset(o) };
            for (s, &bj) in acc_r.iter_mut().zip(bt) {
                *s += a * bj;
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        // SAFETY: the caller's contract.
        let out = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), TILE_COLS) };
        for (o, &s) in out.iter_mut().zip(acc_r) {
            *o = if accumulate { *o + s } else { s };
        }
    }
}

/// [`tile_portable`] for f32 with AVX-512: 16 zmm accumulators, as the GEMM's 8 × 32 kernel.
///
/// # Safety
/// As [`tile_portable`], on a CPU with [`crate::cpu::AVX512_FEATURES`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,bmi2")]
pub(super) unsafe fn tile_avx512(
    rows: &[*const f32; TILE_ROWS],
    off: &[isize],
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let r = *rows;
    let mut acc = [_mm512_setzero_ps(); 2 * TILE_ROWS];
    let mut bp = b;
    for &o in off {
        // SAFETY (the loads): the caller's contract.
        unsafe {
            let b_lo = _mm512_loadu_ps(bp);
            let b_hi = _mm512_loadu_ps(bp.add(16));
            for i in 0..TILE_ROWS {
                let a = _mm512_set1_ps(*r[i].offset(o));
                acc[2 * i] = _mm512_fmadd_ps(a, b_lo, acc[2 * i]);
                acc[2 * i + 1] = _mm512_fmadd_ps(a, b_hi, acc[2 * i + 1]);
            }
            bp = bp.add(ldb);
        }
    }
    for i in 0..TILE_ROWS {
        // SAFETY: row i of the tile is 32 floats at c + i·ldc.
        unsafe {
            let row = c.add(i * ldc);
            let (mut lo, mut hi) = (acc[2 * i], acc[2 * i + 1]);
            if accumulate {
                lo = _mm512_add_ps(_mm512_loadu_ps(row), lo);
                hi = _mm512_add_ps(_mm512_loadu_ps(row.add(16)), hi);
            }
            _mm512_storeu_ps(row, lo);
            _mm512_storeu_ps(row.add(16), hi);
        }
    }
}

/// [`tile_portable`] for f32 with AVX2 and FMA. Sixteen ymm registers cannot hold the tile's
/// 32 accumulators of 8 floats, so it is summed in four passes over the taps, each a quarter of
/// 4 rows × 16 columns in 8 accumulators: per step two loads of B, four broadcasts and eight
/// fused multiply-adds.
///
/// # Safety
/// As [`tile_portable`], on a CPU with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_avx2(
    rows: &[*const f32; TILE_ROWS],
    off: &[isize],
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    for first_row in [0, 4] {
        let r: [*const f32; 4] = std::array::from_fn(|i| rows[first_row + i]);
        for first_col in [0, 16] {
            let mut acc = [_mm256_setzero_ps(); 8];
            let mut bp = b.wrapping_add(first_col);
            for &o in off {
                // SAFETY (the loads): the caller's contract.
                unsafe {
                    let b_lo = _mm256_loadu_ps(bp);
                    let b_hi = _mm256_loadu_ps(bp.add(8));
                    for i in 0..4 {
                        let a = _mm256_set1_ps(*r[i].offset(o));
                        acc[2 * i] = _mm256_fmadd_ps(a, b_lo, acc[2 * i]);
                        acc[2 * i + 1] = _mm256_fmadd_ps(a, b_hi, acc[2 * i + 1]);
                    }
                }
                bp = bp.wrapping_add(ldb);
            }
            for i in 0..4 {
                // SAFETY: row first_row + i of the tile is 32 floats at c + (first_row + i)·ldc.
                unsafe {
                    let out = c.add((first_row + i) * ldc + first_col);
                    let (mut lo, mut hi) = (acc[2 * i], acc[2 * i + 1]);
                    if accumulate {
                        lo = _mm256_add_ps(_mm256_loadu_ps(out), lo);
                        hi = _mm256_add_ps(_mm256_loadu_ps(out.add(8)), hi);
                    }
                    _mm256_storeu_ps(out, lo);
                    _mm256_storeu_ps(out.add(8), hi);
                }
            }
        }
    }
}

/// B packed for these products: `panels[q][t·32 + j] = b(t, 32q + j)`, zero past the last column.
#[derive(Clone, Debug)]
pub struct PackedB<T> {
    pub values: Vec<T>,
    pub depth: usize,
    pub cols: usize,
}

impl<T: Real> PackedB<T> {
    /// Pack `depth × cols` values `b(t, j)` given by a function (B is small: a layer's weights).
    pub fn pack(&mut self, depth: usize, cols: usize, b: impl Fn(usize, usize) -> T) {
        let panels = cols.div_ceil(TILE_COLS);
        self.values.clear();
        self.values.resize(panels * depth * TILE_COLS, T::ZERO);
        for q in 0..panels {
            let panel = &mut self.values[q * depth * TILE_COLS..(q + 1) * depth * TILE_COLS];
            for (t, row) in panel.chunks_exact_mut(TILE_COLS).enumerate() {
                for (j, v) in row.iter_mut().enumerate().take(cols.saturating_sub(q * TILE_COLS)) {
                    *v = b(t, q * TILE_COLS + j);
                }
            }
        }
        (self.depth, self.cols) = (depth, cols);
    }

    fn panel(&self, q: usize) -> *const T {
        self.values[q * self.depth * TILE_COLS..].as_ptr()
    }
}

impl<T> Default for PackedB<T> {
    fn default() -> Self {
        Self { values: Vec::new(), depth: 0, cols: 0 }
    }
}

/// The row pointers of the tiles over `count` rows: row i of tile k reads from
/// `src + start(8k + i)`; rows past `count` repeat the last (computed, never stored).
fn fill_tiles<T>(tiles: &mut [[*const T; TILE_ROWS]], src: *const T, count: usize, start: impl Fn(usize) -> isize) {
    for (k, tile) in tiles.iter_mut().enumerate() {
        *tile = std::array::from_fn(|i| src.wrapping_offset(start((k * TILE_ROWS + i).min(count - 1))));
    }
}

/// `acc[tile, j] (+)= Σ_m src[bases[m] + off[t]] · b[m·ldb + j]` for every tile of taps in
/// `tiles`, the positions in blocks of [`DEPTH_BLOCK`] (the block's rows of B and of the source
/// stay in L2 while every tile passes over them); `acc` holds whole tiles of `cols` values and is
/// overwritten.
///
/// # Safety
/// Every tile row plus every base is readable; `b` holds `bases.len()` rows of `ldb ≥ cols` values.
unsafe fn sum_over_positions<T: Gemm>(
    tiles: &[[*const T; TILE_ROWS]],
    bases: &[isize],
    b: *const T,
    ldb: usize,
    cols: usize,
    acc: &mut [T],
) {
    for m0 in (0..bases.len()).step_by(DEPTH_BLOCK) {
        let block = &bases[m0..bases.len().min(m0 + DEPTH_BLOCK)];
        for (tile, rows) in tiles.iter().enumerate() {
            for q in 0..cols / TILE_COLS {
                let b_panel = b.wrapping_add(m0 * ldb + q * TILE_COLS);
                let target = acc[tile * TILE_ROWS * cols + q * TILE_COLS..].as_mut_ptr();
                // SAFETY: the caller's contract for the reads; the tile lies inside `acc`.
                unsafe { T::gathered_tile(rows, block, b_panel, ldb, target, cols, m0 > 0) };
            }
        }
    }
}

/// Rows per parallel task of [`rows_product`].
const TASK_ROWS: usize = 64;

/// Taps per block of the depth in [`rows_product`]: a block of one panel of B (16 KB in f32)
/// stays in L1 while the task's eight tiles pass over it.
const ROWS_DEPTH_BLOCK: usize = 128;

/// `c[m·ldc + j] = Σ_t src[row(m) + off[t]] · b(t, j)` for m < `m_rows`, j < `b.cols`, then
/// `epilogue(rows, c_block)` on each task's finished rows (whole rows, `ldc` apart). Tasks of 64
/// rows run in parallel and sum into their own accumulator, block of taps after block of taps;
/// each row is computed by one thread in that fixed order, so the result does not depend on the
/// number of threads.
///
/// # Safety
/// `src.offset(row(m) + off[t])` is readable for every m < `m_rows` and t; `c` holds `m_rows` rows
/// of `ldc ≥ b.cols` values.
#[allow(clippy::too_many_arguments)]
pub unsafe fn rows_product<T: Gemm>(
    c: &mut [T],
    ldc: usize,
    m_rows: usize,
    src: &[T],
    row: &(dyn Fn(usize) -> isize + Sync),
    off: &[isize],
    b: &PackedB<T>,
    epilogue: &(dyn Fn(std::ops::Range<usize>, &mut [T]) + Sync),
) {
    assert_eq!(off.len(), b.depth);
    let (cols, depth) = (b.cols, b.depth);
    let wide = cols.next_multiple_of(TILE_COLS);
    let src = SharedPtr(src.as_ptr());
    c[..m_rows * ldc].par_chunks_mut(TASK_ROWS * ldc).enumerate().for_each(|(task, block)| {
        let first = task * TASK_ROWS;
        let rows_here = block.len() / ldc;
        let mut all_tiles = [[std::ptr::null(); TILE_ROWS]; TASK_ROWS / TILE_ROWS];
        let tiles = &mut all_tiles[..rows_here.div_ceil(TILE_ROWS)];
        fill_tiles(tiles, src.get(), rows_here, |r| row(first + r));
        // whole tiles of whole panels are summed in place; otherwise into an accumulator of
        // whole tiles and panels, then copied
        let in_place = ldc == wide && rows_here.is_multiple_of(TILE_ROWS);
        let mut acc = if in_place { Vec::new() } else { vec![T::ZERO; tiles.len() * TILE_ROWS * wide] };
        let target: &mut [T] = if in_place { block } else { &mut acc };
        for d0 in (0..depth).step_by(ROWS_DEPTH_BLOCK) {
            let taps = &off[d0..depth.min(d0 + ROWS_DEPTH_BLOCK)];
            for q in 0..wide / TILE_COLS {
                let b_block = b.panel(q).wrapping_add(d0 * TILE_COLS);
                for (tile, rows) in tiles.iter().enumerate() {
                    let at = target[tile * TILE_ROWS * wide + q * TILE_COLS..].as_mut_ptr();
                    // SAFETY: the caller's contract for the reads; the tile lies inside `target`.
                    unsafe { T::gathered_tile(rows, taps, b_block, TILE_COLS, at, wide, d0 > 0) };
                }
            }
        }
        if !in_place {
            for (out, sums) in block.chunks_exact_mut(ldc).zip(acc.chunks_exact(wide)) {
                out[..cols].copy_from_slice(&sums[..cols]);
            }
        }
        epilogue(first..first + rows_here, block);
    });
}

/// Positions per block of the depth in [`sum_over_positions`].
const DEPTH_BLOCK: usize = 512;

/// `ct[t·ldc + j] = Σ_m src[base[m] + off[t]] · b[m·ldb + j]` for t < `off.len()`, j < `cols`, m <
/// `base.len()` (`ct` is a convolution's weight gradient laid out [tap, channel]). The output's
/// rows of tiles are split between tasks; each task sums its tiles over blocks of the depth in
/// order (one pass over B per task, not per tile), so the result does not depend on the number of
/// threads. `cols` must be a multiple of 32 (`b` is read in place).
///
/// # Safety
/// `src.offset(base[m] + off[t])` is readable for every m, t; `b` holds `base.len()` rows of
/// `ldb ≥ cols` values; `ct` holds `off.len()` rows of `ldc ≥ cols` values.
#[allow(clippy::too_many_arguments)]
pub unsafe fn depth_product<T: Gemm>(
    ct: &mut [T],
    ldc: usize,
    cols: usize,
    src: &[T],
    base: &[isize],
    off: &[isize],
    b: &[T],
    ldb: usize,
) {
    assert!(cols.is_multiple_of(TILE_COLS), "depth_product needs whole panels of 32 columns");
    let taps = off.len();
    if taps <= FEW_TAPS {
        // SAFETY: the caller's contract, passed on.
        return unsafe { depth_split_product(ct, ldc, cols, src, base, off, b, ldb) };
    }
    let src = SharedPtr(src.as_ptr());
    let b = SharedPtr(b.as_ptr());
    // two tasks per thread: few passes over B, and some balance on a busy machine
    let tile_rows = taps.div_ceil(TILE_ROWS);
    let per_task = tile_rows.div_ceil(2 * rayon::current_num_threads()).max(1);
    ct[..taps * ldc].par_chunks_mut(per_task * TILE_ROWS * ldc).enumerate().for_each(|(task, block)| {
        let t_first = task * per_task * TILE_ROWS;
        let taps_here = block.len().div_ceil(ldc);
        let mut tiles = vec![[std::ptr::null(); TILE_ROWS]; taps_here.div_ceil(TILE_ROWS)];
        fill_tiles(&mut tiles, src.get(), taps_here, |t| off[t_first + t]);
        let mut acc = vec![T::ZERO; tiles.len() * TILE_ROWS * cols];
        // SAFETY: the caller's contract, passed on.
        unsafe { sum_over_positions(&tiles, base, b.get(), ldb, cols, &mut acc) };
        for (out, sums) in block.chunks_mut(ldc).zip(acc.chunks_exact(cols)) {
            out[..cols].copy_from_slice(&sums[..cols]);
        }
    });
}

/// At most this many taps, [`depth_product`] splits the depth instead of the taps: a first
/// convolution (K·K taps of one channel) has too few rows of tiles to share between threads, and
/// each task would read all of B.
const FEW_TAPS: usize = 64;

/// Positions per task of [`depth_split_product`]: fixed, so that the result does not depend on
/// the number of threads.
const SPLIT_POSITIONS: usize = 8192;

/// [`depth_product`] for few taps: tasks of [`SPLIT_POSITIONS`] positions each sum every tile over
/// their positions (one pass over their rows of B), then the tasks' sums are added in order.
///
/// # Safety
/// As [`depth_product`].
#[allow(clippy::too_many_arguments)]
unsafe fn depth_split_product<T: Gemm>(
    ct: &mut [T],
    ldc: usize,
    cols: usize,
    src: &[T],
    base: &[isize],
    off: &[isize],
    b: &[T],
    ldb: usize,
) {
    let taps = off.len();
    let src = SharedPtr(src.as_ptr());
    let b = SharedPtr(b.as_ptr());
    let tile_count = taps.div_ceil(TILE_ROWS);
    let sums: Vec<Vec<T>> = base
        .par_chunks(SPLIT_POSITIONS)
        .enumerate()
        .map(|(task, bases)| {
            let mut all_tiles = [[std::ptr::null(); TILE_ROWS]; FEW_TAPS / TILE_ROWS];
            let tiles = &mut all_tiles[..tile_count];
            fill_tiles(tiles, src.get(), taps, |t| off[t]);
            let mut acc = vec![T::ZERO; tile_count * TILE_ROWS * cols];
            let b_here = b.get().wrapping_add(task * SPLIT_POSITIONS * ldb);
            // SAFETY: the caller's contract, for this task's positions.
            unsafe { sum_over_positions(tiles, bases, b_here, ldb, cols, &mut acc) };
            acc
        })
        .collect();
    for (t, out) in ct.chunks_mut(ldc).take(taps).enumerate() {
        for (j, o) in out[..cols].iter_mut().enumerate() {
            *o = sums.iter().fold(T::ZERO, |s, task| s + task[t * cols + j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small integers over 8 so that every sum below is exact in f32.
    fn value(i: usize) -> f32 {
        ((i * 7 + 3) % 13) as f32 / 8.0 - 0.75
    }

    #[test]
    fn rows_and_depth_products_match_their_definitions_exactly() {
        let src: Vec<f32> = (0..4000).map(value).collect();
        let off: Vec<isize> = (0..37).map(|t| (t * 3 + t / 5) as isize).collect();
        let row = |m: usize| (m * 11 % 2000) as isize;
        // rows in whole tiles or not, rows of c as wide as the panels (summed in place) or wider
        for (cols, ldc, m_rows) in
            [(32, 70, 83), (45, 70, 83), (64, 70, 83), (32, 32, 136), (64, 64, 136), (64, 64, 83)]
        {
            let mut b = PackedB::default();
            let bv = |t: usize, j: usize| value(t * 31 + j * 5 + 1);
            b.pack(off.len(), cols, bv);
            let mut c = vec![f32::NAN; m_rows * ldc];
            // SAFETY: every index stays inside src (row < 2000, off < 150) and c.
            unsafe { rows_product(&mut c, ldc, m_rows, &src, &row, &off, &b, &|_, _| {}) };
            for m in 0..m_rows {
                for j in 0..cols {
                    let want: f32 = (0..off.len()).map(|t| src[(row(m) + off[t]) as usize] * bv(t, j)).sum();
                    assert_eq!(c[m * ldc + j], want, "cols {cols}, ldc {ldc}, ({m}, {j})");
                }
            }
        }
        // the weight gradient's form, taps × channels: few taps (the depth split between tasks, in
        // one task or in three) and many (the taps split)
        for (depth, taps) in [(600, 19), (2 * SPLIT_POSITIONS + 300, 25), (1500, FEW_TAPS + 6)] {
            let cols = 64;
            let b: Vec<f32> = (0..depth * cols).map(|i| value(i * 3)).collect();
            let base: Vec<isize> = (0..depth).map(|m| (m * 5 % 3000) as isize).collect();
            let off: Vec<isize> = (0..taps).map(|t| (t * 7 % 900) as isize).collect();
            let mut ct = vec![f32::NAN; taps * cols];
            // SAFETY: base < 3000 and off < 900 stay inside src (4000 values); b and ct as sized.
            unsafe { depth_product(&mut ct, cols, cols, &src, &base, &off, &b, cols) };
            for t in 0..taps {
                for j in 0..cols {
                    let want: f32 = (0..depth).map(|m| src[(base[m] + off[t]) as usize] * b[m * cols + j]).sum();
                    assert_eq!(ct[t * cols + j], want, "depth {depth}, ({t}, {j})");
                }
            }
        }
    }

    /// A tile's signature, for the comparisons below.
    type Tile = unsafe fn(&[*const f32; TILE_ROWS], &[isize], *const f32, usize, *mut f32, usize, bool);

    /// The 8×40 outputs (starting at 0.5) of the portable tile and of `tile` on the same
    /// gathered rows, 300 taps and a B of 40 columns: once storing, once accumulating.
    fn portable_and(tile: Tile) -> Vec<(Vec<f32>, Vec<f32>)> {
        let src: Vec<f32> = (0..3000).map(|i| (i as f32 * 0.37).sin()).collect();
        let rows: [*const f32; 8] = std::array::from_fn(|i| src[i * 97..].as_ptr());
        let off: Vec<isize> = (0..300).map(|t| (t * 2) as isize).collect();
        let b: Vec<f32> = (0..300 * 40).map(|i| (i as f32 * 0.11).cos()).collect();
        [false, true]
            .into_iter()
            .map(|accumulate| {
                let (mut c1, mut c2) = (vec![0.5f32; 8 * 40], vec![0.5f32; 8 * 40]);
                // SAFETY: rows + off stay inside src; b has 300 rows of 40 (ldb 40); c 8 rows of
                // 40; the callers run `tile` only on a CPU that has its features.
                unsafe {
                    tile_portable(&rows, &off, b.as_ptr(), 40, c1.as_mut_ptr(), 40, accumulate);
                    tile(&rows, &off, b.as_ptr(), 40, c2.as_mut_ptr(), 40, accumulate);
                }
                (c1, c2)
            })
            .collect()
    }

    #[test]
    fn the_avx2_tile_equals_the_portable_one() {
        if !crate::cpu::detected_avx2() {
            eprintln!("skipped: this CPU lacks AVX2 and FMA");
            return;
        }
        for (c1, c2) in portable_and(tile_avx2) {
            for (i, (x, y)) in c1.iter().zip(&c2).enumerate() {
                // columns 32..40 are outside the tile and stay as they were
                if i % 40 >= 32 {
                    assert_eq!(*y, 0.5);
                    continue;
                }
                // fused multiply-adds round once per step: within 300 roundings of 4e-7 each
                assert!((x - y).abs() < 1e-3, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn the_avx512_tile_equals_the_portable_one() {
        if !crate::cpu::detected_avx512() {
            eprintln!("skipped: this CPU lacks {}", crate::cpu::AVX512_FEATURES);
            return;
        }
        for (c1, c2) in portable_and(tile_avx512) {
            for (x, y) in c1.iter().zip(&c2) {
                // fused multiply-adds round once per step: within 300 roundings of 4e-7 each
                assert!((x - y).abs() < 1e-3, "{x} vs {y}");
            }
        }
    }
}
