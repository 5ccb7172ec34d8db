//! The matrix product `C = op(A)·op(B)` (or `C += …`), blocked and packed as in the BLIS papers.
//!
//! Why dropnet has its own: a training step must not allocate, and a general-purpose crate allocates
//! its packing buffers in every call. Here they live in a per-thread [`Workspace`] that grows to the
//! largest block once and is reused after that. Owning the product also fixes two properties the
//! rest of dropnet relies on: every element of C is computed by one thread, with the same blocking
//! whatever the thread count, so results are bit-identical on 1 and 2 threads; and every tile is
//! summed from zero before C is touched, so edge tiles round exactly like full ones.
//!
//! The loops, outermost first (`NC`, `KC`, `MC` are block sizes in elements):
//!
//! ```text
//! for jc in 0..n step NC                 columns of B and C
//!   for pc in 0..k step KC               depth
//!     pack B[pc.., jc..] into NR-wide panels           (kc × nc, streamed from L2/L3)
//!     for ic in 0..m step MC             rows of A and C
//!       pack A[ic.., pc..] into MR-tall panels         (mc × kc)
//!       for each MR panel of A           (one panel, kc·MR values, stays in L1)
//!         for each NR panel of B
//!           micro-kernel: the MR × NR tile of C += A panel · B panel
//! ```
//!
//! A packed A panel holds `a[r, p]` at `p·MR + r`, a packed B panel `b[p, j]` at `p·NR + j`; rows
//! and columns beyond the matrix are packed as zeros, so the kernel always computes a full tile.
//! Transposed operands are read through their strides while packing, so no operand is ever copied
//! outside the packing buffers. B is always packed, even for a training batch whose 128 rows of A
//! meet each column only 128 times: read in place, a weight matrix 1024 floats wide puts each
//! step of depth 4 KiB after the last, so a panel's rows share a handful of L1 and L2 sets and
//! evict each other (packing is faster for W1's input-gradient product; BENCHMARKS.md has the
//! per-phase timing). One departure from the textbook loops:
//! an optional [`Epilogue`] runs on each strip of C as soon as it is final (the optimizer update
//! of a weight matrix rides on the product that computes its gradient).

pub mod gathered;
mod kernel;
mod pack;

use crate::scalar::Real;
use kernel::MicroKernel;
use pack::{pack_a, pack_b, prefetch_panel};
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

/// Depth of a block: one A panel is `KC·MR` values (8 KiB for f32 on AVX-512), well inside L1.
const KC: usize = 256;
/// Rows of A packed at once (`MC·KC` values: 256 KiB for f32, inside L2).
const MC: usize = 256;
/// Columns of B packed at once (`KC·NC` values: 2 MiB for f32, inside L3).
const NC: usize = 2048;
/// Products with fewer multiply-adds than this run on one thread, where handing half to another
/// thread would cost more than it saves. W1's 1024 → 10 layer (1.3 M multiply-adds per product)
/// is above the bound and split, which made W1 steps faster (the A/B is in BENCHMARKS.md).
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// One operand as the product reads it: element (r, c) of op(X) is at `ptr + r·rs + c·cs`.
#[derive(Clone, Copy)]
pub struct Operand<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

/// `c[i·ldc + j] (+)= Σ_p a(i, p)·b(p, j)` for i < m, j < n, p < k.
#[derive(Clone, Copy)]
pub struct Product<T> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Operand<T>,
    pub b: Operand<T>,
    pub c: *mut T,
    pub ldc: usize,
    pub accumulate: bool,
    /// False: C's final values are for the epilogue only. When the whole depth fits one block
    /// (k ≤ KC, no accumulation), each strip is then computed into a small per-thread buffer that
    /// stays in L1, handed to the epilogue, and never written to `c`; otherwise `c` is written
    /// as usual. The fused optimizer step uses this for the weight gradient, which it needs only
    /// for the update.
    pub store_c: bool,
    /// Where this product's C starts within the whole product it is part of (row, column); (0, 0)
    /// unless `run` split the product between threads. Epilogues see whole-product coordinates.
    pub origin: (usize, usize),
}

/// Called once for each finished block of C as `epilogue(rows, cols, block, ld)`: its rows and
/// columns (whole-product coordinates), and where its values are (element (rows.start + r,
/// cols.start + j) at `block + r·ld + j`: in C itself, or in scratch when C is not stored), right
/// after the block's last tile was computed and while it is still in cache. Blocks are disjoint,
/// cover C exactly once, and may be handed to different threads; the epilogue may rewrite its
/// block (the forward pass adds the bias there).
pub type Epilogue<'a, T> = &'a (dyn Fn(Range<usize>, Range<usize>, *mut T, usize) + Sync);

// SAFETY: a Product is a description of disjoint work handed to threads by `run`, which gives each
// thread a block of C no other thread writes; A and B are only read.
unsafe impl<T: Send> Send for Product<T> {}
unsafe impl<T: Sync> Sync for Product<T> {}

/// The element types with a product: each picks its micro-kernel.
pub trait Gemm: Real {
    /// Computes `p` on the current thread.
    ///
    /// # Safety
    /// Every address `p` describes must be valid, and C must not overlap A or B.
    #[doc(hidden)]
    unsafe fn product_on_this_thread(p: &Product<Self>, epilogue: Option<Epilogue<Self>>);

    /// One tile of a product with a gathered A operand (see [`gathered`]).
    ///
    /// # Safety
    /// As [`gathered::tile_portable`].
    #[doc(hidden)]
    unsafe fn gathered_tile(
        rows: &[*const Self; gathered::TILE_ROWS],
        off: &[isize],
        b: *const Self,
        ldb: usize,
        c: *mut Self,
        ldc: usize,
        accumulate: bool,
    ) {
        unsafe { gathered::tile_portable(rows, off, b, ldb, c, ldc, accumulate) }
    }
}

impl Gemm for f32 {
    unsafe fn product_on_this_thread(p: &Product<f32>, epilogue: Option<Epilogue<f32>>) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY (both): the check is exactly the kernel's target features (crate::cpu).
            if crate::cpu::avx512() {
                return unsafe { blocked::<f32, kernel::Avx512>(p, epilogue) };
            }
            if crate::cpu::avx2() {
                return unsafe { blocked::<f32, kernel::Avx2>(p, epilogue) };
            }
        }
        unsafe { blocked::<f32, kernel::Portable>(p, epilogue) }
    }

    unsafe fn gathered_tile(
        rows: &[*const f32; gathered::TILE_ROWS],
        off: &[isize],
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::avx512() {
            // SAFETY: the check is exactly the kernel's target features; the rest is the caller's.
            return unsafe { gathered::tile_avx512(rows, off, b, ldb, c, ldc, accumulate) };
        }
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::avx2() {
            // SAFETY: as above (AVX2 and FMA).
            return unsafe { gathered::tile_avx2(rows, off, b, ldb, c, ldc, accumulate) };
        }
        unsafe { gathered::tile_portable(rows, off, b, ldb, c, ldc, accumulate) }
    }
}

impl Gemm for f64 {
    unsafe fn product_on_this_thread(p: &Product<f64>, epilogue: Option<Epilogue<f64>>) {
        unsafe { blocked::<f64, kernel::Portable>(p, epilogue) }
    }
}

/// Computes `p` on the current rayon pool: large products are split into one block of C per thread.
///
/// # Safety
/// As [`Gemm::product_on_this_thread`].
pub(crate) unsafe fn run<T: Gemm>(p: &Product<T>, epilogue: Option<Epilogue<T>>) {
    if p.m == 0 || p.n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    if threads == 1 || p.m * p.n * p.k < PARALLEL_MIN_MACS {
        return unsafe { T::product_on_this_thread(p, epilogue) };
    }
    // Split the longer side of C at a multiple of 32, so that the AVX-512 kernel (8 x 32 tiles) has
    // no partial tile at the seam. The split never changes a result: each element of C is the same
    // chain of multiply-adds over the depth wherever its tile lies. A square C is split by rows: a
    // weight gradient's epilogue (the optimizer update) then walks one contiguous half of the
    // weights per thread rather than half of every row, which W1's 1024 x 1024 layer steps
    // 1.3–2.6% faster (interleaved in-process A/B, BENCHMARKS.md).
    let split_rows = p.m >= p.n;
    let side = if split_rows { p.m } else { p.n };
    let step = side.div_ceil(threads).next_multiple_of(32);
    (0..side.div_ceil(step)).into_par_iter().for_each(|t| {
        let (start, len) = (t * step, step.min(side - t * step));
        let mut part = *p;
        if split_rows {
            part.m = len;
            part.a.ptr = p.a.ptr.wrapping_offset(start as isize * p.a.rs);
            part.c = p.c.wrapping_add(start * p.ldc);
            part.origin.0 += start;
        } else {
            part.n = len;
            part.b.ptr = p.b.ptr.wrapping_offset(start as isize * p.b.cs);
            part.c = p.c.wrapping_add(start);
            part.origin.1 += start;
        }
        // SAFETY: `part` is p restricted to rows (or columns) start..start+len of C, which no
        // other iteration touches.
        unsafe { T::product_on_this_thread(&part, epilogue) }
    });
}

/// Packing buffers of one thread, in cache lines so that every panel starts 64-byte aligned.
#[derive(Default)]
struct Workspace {
    a: Vec<CacheLine>,
    b: Vec<CacheLine>,
    /// One MR-row strip of C when C is not stored.
    c: Vec<CacheLine>,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct CacheLine([u8; 64]);

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// A pointer to `len` values of T in `lines`, grown (the only allocation here) when too short.
fn reserve<T>(lines: &mut Vec<CacheLine>, len: usize) -> *mut T {
    let needed = (len * std::mem::size_of::<T>()).div_ceil(64);
    if lines.len() < needed {
        lines.resize(needed, CacheLine([0; 64]));
    }
    lines.as_mut_ptr() as *mut T
}

/// The blocked loops of the module comment, with kernel K, on the current thread.
///
/// # Safety
/// As [`Gemm::product_on_this_thread`].
unsafe fn blocked<T: Real, K: MicroKernel<T>>(p: &Product<T>, epilogue: Option<Epilogue<T>>) {
    WORKSPACE.with(|cell| {
        // A product never calls back into rayon while it holds the workspace, so the borrow cannot
        // be re-entered from this thread; if it somehow were, a fresh workspace keeps it correct.
        let mut fresh = Workspace::default();
        let mut borrowed = cell.try_borrow_mut();
        let ws = match borrowed.as_mut() {
            Ok(ws) => &mut **ws,
            Err(_) => &mut fresh,
        };
        let kc_max = KC.min(p.k);
        let packed_b = reserve::<T>(&mut ws.b, kc_max * NC.min(p.n).next_multiple_of(K::NR));
        let packed_a = reserve::<T>(&mut ws.a, MC.min(p.m).next_multiple_of(K::MR) * kc_max);
        let strip = (!p.store_c && p.k <= KC && !p.accumulate && epilogue.is_some())
            .then(|| reserve::<T>(&mut ws.c, K::MR * NC.min(p.n)));
        for jc in (0..p.n).step_by(NC) {
            let nc = NC.min(p.n - jc);
            for pc in (0..p.k).step_by(KC) {
                let kc = KC.min(p.k - pc);
                let next = next_block_of_b(p, jc, nc, pc + kc);
                // SAFETY: the caller guarantees the operands; the buffers were reserved above for
                // the largest block.
                unsafe { pack_b::<T, K>(packed_b, p.b, pc, kc, jc, nc) };
                // The first block of depth writes C (or adds to it when the caller asked), later
                // ones add to it.
                let accumulate = p.accumulate || pc > 0;
                let finished = if pc + kc == p.k { epilogue } else { None };
                for ic in (0..p.m).step_by(MC) {
                    let mc = MC.min(p.m - ic);
                    unsafe {
                        pack_a::<T, K>(packed_a, p.a, ic, mc, pc, kc);
                        tiles::<T, K>(p, packed_a, packed_b, (ic, mc), (jc, nc), kc, accumulate, finished, strip, next);
                    }
                }
            }
        }
    })
}

/// Runs the micro-kernel over every MR × NR tile of the block rows `ic..ic+mc`, columns `jc..jc+nc`,
/// and the epilogue (on the last block of depth) on each MR-row strip as soon as it is done. With
/// `strip`, each strip of C goes there (row stride nc) instead of into C.
#[allow(clippy::too_many_arguments)]
unsafe fn tiles<T: Real, K: MicroKernel<T>>(
    p: &Product<T>,
    packed_a: *const T,
    packed_b: *const T,
    (ic, mc): (usize, usize),
    (jc, nc): (usize, usize),
    kc: usize,
    accumulate: bool,
    finished: Option<Epilogue<T>>,
    strip: Option<*mut T>,
    next: Option<BlockOfB<T>>,
) {
    let mut edge = [T::ZERO; kernel::MAX_TILE];
    let strips = p.m.div_ceil(K::MR);
    for ir in (0..mc).step_by(K::MR) {
        if let Some(next) = next {
            next.prefetch_share((ic + ir) / K::MR, strips);
        }
        let rows = K::MR.min(mc - ir);
        let a_panel = unsafe { packed_a.add(ir * kc) };
        let (c_strip, ldc) = match strip {
            Some(strip) => (strip, nc),
            None => (p.c.wrapping_add((ic + ir) * p.ldc + jc), p.ldc),
        };
        for jr in (0..nc).step_by(K::NR) {
            let cols = K::NR.min(nc - jr);
            let b_panel = unsafe { packed_b.add(jr * kc) };
            let c_tile = c_strip.wrapping_add(jr);
            unsafe {
                if rows == K::MR && cols == K::NR {
                    K::tile(kc, a_panel, b_panel, c_tile, ldc, accumulate);
                } else {
                    // A tile over the edge of C: computed into `edge` (same arithmetic: a sum from
                    // zero, then stored), and only its valid part copied.
                    K::tile(kc, a_panel, b_panel, edge.as_mut_ptr(), K::NR, false);
                    for r in 0..rows {
                        for j in 0..cols {
                            let c = c_tile.add(r * ldc + j);
                            let sum = edge[r * K::NR + j];
                            *c = if accumulate { *c + sum } else { sum };
                        }
                    }
                }
            }
        }
        if let Some(epilogue) = finished {
            let (row, col) = (p.origin.0 + ic + ir, p.origin.1 + jc);
            epilogue(row..row + rows, col..col + nc, c_strip, ldc);
        }
    }
}

/// Depth `pc..pc+kc`, columns `jc..jc+nc` of op(B): a block that `pack_b` will pack.
#[derive(Clone, Copy)]
struct BlockOfB<T> {
    b: Operand<T>,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
}

/// The block of B packed after the one at columns `jc..jc+nc` that ends at depth `pc_end`, if any.
fn next_block_of_b<T: Real>(p: &Product<T>, jc: usize, nc: usize, pc_end: usize) -> Option<BlockOfB<T>> {
    if pc_end < p.k {
        Some(BlockOfB { b: p.b, pc: pc_end, kc: KC.min(p.k - pc_end), jc, nc })
    } else if jc + nc < p.n {
        Some(BlockOfB { b: p.b, pc: 0, kc: KC.min(p.k), jc: jc + nc, nc: NC.min(p.n - jc - nc) })
    } else {
        None
    }
}

impl<T: Real> BlockOfB<T> {
    /// Fetches share `part` of `parts` of the block (a run of its columns) into L2. Each MR-row
    /// strip of the current block's tiles fetches one share, so the next block arrives while this
    /// one is multiplied and `pack_b` reads it from L2 rather than L3 (W1 steps 0.3–1% faster,
    /// interleaved in-process A/B, BENCHMARKS.md).
    fn prefetch_share(self, part: usize, parts: usize) {
        let (first, end) = (part * self.nc / parts, (part + 1) * self.nc / parts);
        let origin = self.b.ptr.wrapping_offset(self.pc as isize * self.b.rs + (self.jc + first) as isize * self.b.cs);
        prefetch_panel(origin, (self.b.cs, self.b.rs), end - first, self.kc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x(i, j) for a matrix stored with the given strides, values small integers divided by 8 so
    /// that every product and partial sum below is exact in f32 (|value| ≤ 1.5, sums of ≤ 2100
    /// terms of ≤ 2.25 stay far inside 2^24 · 2^-6).
    fn value(i: usize, j: usize, salt: usize) -> f32 {
        ((i * 7 + j * 13 + salt) % 25) as f32 / 8.0 - 1.5
    }

    /// Storage for op(X) of shape rows x cols, transposed or not, and its operand description.
    fn stored(rows: usize, cols: usize, transposed: bool, salt: usize) -> (Vec<f32>, isize, isize) {
        let mut data = vec![0.0; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                let at = if transposed { j * rows + i } else { i * cols + j };
                data[at] = value(i, j, salt);
            }
        }
        if transposed {
            (data, 1, rows as isize)
        } else {
            (data, cols as isize, 1)
        }
    }

    fn reference(m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| value(i, p, 1) as f64 * value(p, j, 2) as f64).sum();
            }
        }
        c
    }

    /// Runs every shape through `compute` for all four transposes, with and without accumulation,
    /// and checks the result against the f64 reference exactly (the values make every sum exact).
    fn check_all(compute: impl Fn(&Product<f32>)) {
        // edges below and above MR (8, 6, 4), NR (32, 16), KC (256), MC (256) and NC (2048)
        let shapes = [
            (1, 1, 1),
            (7, 33, 5),
            (8, 32, 16),
            (13, 50, 257),
            (130, 70, 300),
            (300, 40, 33),
            (9, 2100, 3),
            (33, 17, 600),
        ];
        for (m, n, k) in shapes {
            let expected = reference(m, n, k);
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let (a, a_rs, a_cs) = stored(m, k, ta, 1);
                let (b, b_rs, b_cs) = stored(k, n, tb, 2);
                for accumulate in [false, true] {
                    let mut c = vec![0.5f32; m * n];
                    compute(&Product {
                        m,
                        n,
                        k,
                        a: Operand { ptr: a.as_ptr(), rs: a_rs, cs: a_cs },
                        b: Operand { ptr: b.as_ptr(), rs: b_rs, cs: b_cs },
                        c: c.as_mut_ptr(),
                        ldc: n,
                        accumulate,
                        store_c: true,
                        origin: (0, 0),
                    });
                    let start = if accumulate { 0.5 } else { 0.0 };
                    for (idx, (&got, &want)) in c.iter().zip(&expected).enumerate() {
                        assert_eq!(got as f64, start + want, "{m}x{k}x{n} ta={ta} tb={tb} acc={accumulate} at {idx}");
                    }
                }
            }
        }
    }

    #[test]
    fn portable_kernel_is_exact_on_every_layout() {
        check_all(|p| unsafe { blocked::<f32, kernel::Portable>(p, None) });
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernel_is_exact_on_every_layout() {
        if !crate::cpu::detected_avx2() {
            eprintln!("skipped: this CPU lacks {}", crate::cpu::AVX2_FEATURES);
            return;
        }
        check_all(|p| unsafe { blocked::<f32, kernel::Avx2>(p, None) });
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_kernel_and_packing_are_exact_on_every_layout() {
        if !crate::cpu::detected_avx512() {
            eprintln!("skipped: this CPU lacks {}", crate::cpu::AVX512_FEATURES);
            return;
        }
        check_all(|p| unsafe { blocked::<f32, kernel::Avx512>(p, None) });
    }

    #[test]
    fn the_threaded_product_is_exact_and_matches_one_thread_bit_for_bit() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        pool.install(|| check_all(|p| unsafe { run(p, None) }));
        // values that round: the split must not change a single bit
        let (m, n, k) = (300, 520, 700);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 2654435761usize) % 1000) as f32 / 997.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 40503usize) % 1000) as f32 / 1009.0).collect();
        let product = |c: &mut Vec<f32>| Product {
            m,
            n,
            k,
            a: Operand { ptr: a.as_ptr(), rs: k as isize, cs: 1 },
            b: Operand { ptr: b.as_ptr(), rs: n as isize, cs: 1 },
            c: c.as_mut_ptr(),
            ldc: n,
            accumulate: false,
            store_c: true,
            origin: (0, 0),
        };
        let mut one = vec![0.0f32; m * n];
        let mut three = vec![0.0f32; m * n];
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| unsafe { run(&product(&mut one), None) });
        pool.install(|| unsafe { run(&product(&mut three), None) });
        assert!(one.iter().zip(&three).all(|(x, y)| x.to_bits() == y.to_bits()));
    }

    #[test]
    fn the_epilogue_sees_every_element_once_and_final() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        // split by columns, by rows, and deeper than one block; with C stored and not
        for (m, n, k) in [(40, 300, 70), (300, 40, 70), (130, 2100, 300)] {
            for store_c in [true, false] {
                let expected = reference(m, n, k);
                let (a, a_rs, a_cs) = stored(m, k, false, 1);
                let (b, b_rs, b_cs) = stored(k, n, false, 2);
                let mut c = vec![f32::NAN; m * n];
                let seen: Vec<std::sync::atomic::AtomicU32> = (0..m * n).map(|_| Default::default()).collect();
                let epilogue = |rows: Range<usize>, cols: Range<usize>, block: *mut f32, ld: usize| {
                    for (r, i) in rows.enumerate() {
                        for (j_in_block, j) in cols.clone().enumerate() {
                            // SAFETY: (r, j_in_block) is inside the finished block.
                            let value = unsafe { *block.add(r * ld + j_in_block) };
                            assert_eq!(value as f64, expected[i * n + j], "{m}x{k}x{n} at ({i}, {j})");
                            seen[i * n + j].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                };
                let product = Product {
                    m,
                    n,
                    k,
                    a: Operand { ptr: a.as_ptr(), rs: a_rs, cs: a_cs },
                    b: Operand { ptr: b.as_ptr(), rs: b_rs, cs: b_cs },
                    c: c.as_mut_ptr(),
                    ldc: n,
                    accumulate: false,
                    store_c,
                    origin: (0, 0),
                };
                pool.install(|| unsafe { run(&product, Some(&epilogue)) });
                assert!(seen.iter().all(|s| s.load(std::sync::atomic::Ordering::Relaxed) == 1), "{m}x{k}x{n}");
                // C holds the product when stored, or when the depth needs more than one block;
                // otherwise it is never written
                let written = store_c || k > KC;
                let untouched = c.iter().all(|v| v.is_nan());
                assert_eq!(untouched, !written, "{m}x{k}x{n}, store_c {store_c}");
                if written {
                    assert!(c.iter().zip(&expected).all(|(&v, &e)| v as f64 == e), "{m}x{k}x{n}");
                }
            }
        }
    }
}
