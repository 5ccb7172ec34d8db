//! Micro-kernels: one MR × NR tile of C from one packed A panel and one packed B panel, and the
//! panel packing ([`gather`]) that a kernel's `pack` falls back to.
//!
//! ```text
//! acc[r, j] = Σ_p a_panel[p·MR + r] · b_panel[p·NR + j]     (a chain over p, from zero)
//! c[r·ldc + j] = acc[r, j]            or, accumulating,   c[r·ldc + j] += acc[r, j]
//! ```
//!
//! Each step p loads one row of the B panel into vectors, broadcasts each of the MR values of the
//! A panel and multiply-adds: MR · NR/lanes fused multiply-adds against NR/lanes + MR loads, so the
//! FMA units, not memory, set the pace. The tile sizes fill the register file: AVX-512 keeps
//! 8 × 32 floats in 16 of its 32 zmm registers, AVX2 6 × 16 in 12 of its 16 ymm registers.

use crate::scalar::Real;

/// The largest MR·NR of any kernel (the size of the buffer for tiles over C's edge).
pub(super) const MAX_TILE: usize = 256;

pub(super) trait MicroKernel<T> {
    const MR: usize;
    const NR: usize;
    /// The tile formula above, for a full MR × NR tile of C starting at `c` with row stride `ldc`.
    ///
    /// # Safety
    /// `a` holds kc·MR values, `b` kc rows of NR values, `c` an MR × NR tile.
    unsafe fn tile(kc: usize, a: *const T, b: *const T, c: *mut T, ldc: usize, accumulate: bool);

    /// Packs one panel (see [`gather`], whose contract this shares); kernels may override it
    /// with a vectorised version for their panel widths.
    ///
    /// # Safety
    /// As [`gather`].
    unsafe fn pack(panel: &mut [T], width: usize, origin: *const T, strides: (isize, isize), used: usize, depth: usize)
    where
        T: Real,
    {
        unsafe { gather(panel, width, origin, strides, used, depth) }
    }
}

/// Plain Rust, for f64 (gradient checks) and for CPUs without AVX2; the compiler vectorises the
/// inner loop over j.
pub(super) struct Portable;

impl<T: Real> MicroKernel<T> for Portable {
    const MR: usize = 4;
    const NR: usize = 16;

    unsafe fn tile(kc: usize, a: *const T, b: *const T, c: *mut T, ldc: usize, accumulate: bool) {
        const MR: usize = 4;
        const NR: usize = 16;
        // SAFETY: the caller's contract.
        let a = unsafe { std::slice::from_raw_parts(a, kc * MR) };
        let mut acc = [[T::ZERO; NR]; MR];
        for (p, a_p) in a.chunks_exact(MR).enumerate() {
            // SAFETY: row p of the B panel holds NR values.
            let b_p = unsafe { std::slice::from_raw_parts(b.add(p * NR), NR) };
            for (acc_r, &a_rp) in acc.iter_mut().zip(a_p) {
                for (acc_rj, &b_pj) in acc_r.iter_mut().zip(b_p) {
                    *acc_rj += a_rp * b_pj;
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            // SAFETY: the caller's contract (an MR x NR tile at c).
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), NR) };
            for (c_rj, &sum) in row.iter_mut().zip(acc_r) {
                *c_rj = if accumulate { *c_rj + sum } else { sum };
            }
        }
    }
}

/// 8 × 32 tiles in 16 zmm accumulators.
#[cfg(target_arch = "x86_64")]
pub(super) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl MicroKernel<f32> for Avx512 {
    const MR: usize = 8;
    const NR: usize = 32;

    unsafe fn tile(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
        // SAFETY: `Gemm for f32` picks this kernel only when `cpu::avx512()` holds, which checks
        // every feature the kernel is compiled with.
        unsafe { tile_avx512(kc, a, b, c, ldc, accumulate) }
    }

    unsafe fn pack(
        panel: &mut [f32],
        width: usize,
        origin: *const f32,
        strides: (isize, isize),
        used: usize,
        depth: usize,
    ) {
        // SAFETY: this kernel runs only when `cpu::avx512()` holds (its features); the rest is the
        // caller's contract.
        unsafe { pack_avx512(panel, width, origin, strides, used, depth) }
    }
}

/// The panel packing of [`gather`] for full 8- and 32-wide panels with one unit stride, the
/// layouts of every W1 product; anything else goes to the portable code.
///
/// Runs of contiguous values are moved a vector at a time. A transposed read (unit stride along
/// the depth, as the weights in the forward product) loads 8 rows of 16 values and transposes them
/// in registers. The scalar loop this replaces took a fifth of a W1 step (perf); AVX-512 gathers
/// were no faster than the scalar loop here.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,bmi2")]
unsafe fn pack_avx512(
    panel: &mut [f32],
    width: usize,
    origin: *const f32,
    (w_stride, p_stride): (isize, isize),
    used: usize,
    depth: usize,
) {
    use std::arch::x86_64::*;
    let dst = panel.as_mut_ptr();
    // SAFETY (every block): x(w, p) at origin + w·w_stride + p·p_stride is readable for w < used,
    // p < depth (the caller's contract), and the panel holds depth·width values.
    match (width, used == width, w_stride, p_stride) {
        (8, true, 1, _) => {
            for p in 0..depth {
                unsafe {
                    let run = _mm256_loadu_ps(origin.offset(p as isize * p_stride));
                    _mm256_storeu_ps(dst.add(p * 8), run);
                }
            }
        }
        (32, true, 1, _) => {
            for p in 0..depth {
                unsafe {
                    let src = origin.offset(p as isize * p_stride);
                    _mm512_storeu_ps(dst.add(p * 32), _mm512_loadu_ps(src));
                    _mm512_storeu_ps(dst.add(p * 32 + 16), _mm512_loadu_ps(src.add(16)));
                }
            }
        }
        (8 | 32, true, ld, 1) => {
            // Transposed read: the panel's w-th "row" of the source is contiguous along the depth.
            // Blocks of 8 source rows x 16 depth steps are transposed in registers.
            let full = depth / 16 * 16;
            for w0 in (0..width).step_by(8) {
                let rows: [*const f32; 8] = std::array::from_fn(|r| origin.wrapping_offset((w0 + r) as isize * ld));
                for p0 in (0..full).step_by(16) {
                    unsafe {
                        let block = transpose_8x16(std::array::from_fn(|r| _mm512_loadu_ps(rows[r].add(p0))));
                        for (t, pair) in block.iter().enumerate() {
                            // pair holds depth steps p0+2t and p0+2t+1, 8 values each
                            let p = p0 + 2 * t;
                            if width == 8 {
                                _mm512_storeu_ps(dst.add(p * 8), *pair);
                            } else {
                                _mm256_storeu_ps(dst.add(p * 32 + w0), _mm512_castps512_ps256(*pair));
                                let upper = _mm512_shuffle_f32x4::<0xEE>(*pair, *pair);
                                _mm256_storeu_ps(dst.add((p + 1) * 32 + w0), _mm512_castps512_ps256(upper));
                            }
                        }
                    }
                }
                for p in full..depth {
                    for (r, row) in rows.iter().enumerate() {
                        unsafe { *dst.add(p * width + w0 + r) = *row.add(p) };
                    }
                }
            }
        }
        _ => unsafe { gather(panel, width, origin, (w_stride, p_stride), used, depth) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,bmi2")]
unsafe fn tile_avx512(kc: usize, mut a: *const f32, mut b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    const MR: usize = 8;
    // acc[2r] holds columns 0..16 of row r, acc[2r + 1] columns 16..32
    let mut acc = [_mm512_setzero_ps(); 2 * MR];
    for _ in 0..kc {
        // SAFETY: step p reads a[p·8 .. p·8+8] and b[p·32 .. p·32+32], inside the panels.
        unsafe {
            let b_lo = _mm512_loadu_ps(b);
            let b_hi = _mm512_loadu_ps(b.add(16));
            for r in 0..MR {
                let a_r = _mm512_set1_ps(*a.add(r));
                acc[2 * r] = _mm512_fmadd_ps(a_r, b_lo, acc[2 * r]);
                acc[2 * r + 1] = _mm512_fmadd_ps(a_r, b_hi, acc[2 * r + 1]);
            }
            a = a.add(MR);
            b = b.add(32);
        }
    }
    for r in 0..MR {
        // SAFETY: row r of the tile is 32 floats at c + r·ldc (unaligned in general).
        unsafe {
            let row = c.add(r * ldc);
            let (mut lo, mut hi) = (acc[2 * r], acc[2 * r + 1]);
            if accumulate {
                lo = _mm512_add_ps(_mm512_loadu_ps(row), lo);
                hi = _mm512_add_ps(_mm512_loadu_ps(row.add(16)), hi);
            }
            _mm512_storeu_ps(row, lo);
            _mm512_storeu_ps(row.add(16), hi);
        }
    }
}

/// 6 × 16 tiles in 12 ymm accumulators.
#[cfg(target_arch = "x86_64")]
pub(super) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl MicroKernel<f32> for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;

    unsafe fn tile(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
        // SAFETY: `Gemm for f32` picks this kernel only when `cpu::avx2()` holds (AVX2 and FMA).
        unsafe { tile_avx2(kc, a, b, c, ldc, accumulate) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(kc: usize, mut a: *const f32, mut b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    const MR: usize = 6;
    let mut acc = [_mm256_setzero_ps(); 2 * MR];
    for _ in 0..kc {
        // SAFETY: as in `tile_avx512`, with 6 and 16 values per step.
        unsafe {
            let b_lo = _mm256_loadu_ps(b);
            let b_hi = _mm256_loadu_ps(b.add(8));
            for r in 0..MR {
                let a_r = _mm256_set1_ps(*a.add(r));
                acc[2 * r] = _mm256_fmadd_ps(a_r, b_lo, acc[2 * r]);
                acc[2 * r + 1] = _mm256_fmadd_ps(a_r, b_hi, acc[2 * r + 1]);
            }
            a = a.add(MR);
            b = b.add(16);
        }
    }
    for r in 0..MR {
        // SAFETY: row r of the tile is 16 floats at c + r·ldc.
        unsafe {
            let row = c.add(r * ldc);
            let (mut lo, mut hi) = (acc[2 * r], acc[2 * r + 1]);
            if accumulate {
                lo = _mm256_add_ps(_mm256_loadu_ps(row), lo);
                hi = _mm256_add_ps(_mm256_loadu_ps(row.add(8)), hi);
            }
            _mm256_storeu_ps(row, lo);
            _mm256_storeu_ps(row.add(8), hi);
        }
    }
}

/// Transposes 8 rows of 16 floats: `out[t]` holds column 2t (rows 0..8), then column 2t + 1.
///
/// Three rounds of shuffles: interleave 32-bit values of row pairs, then 64-bit pairs of those,
/// giving in each 128-bit lane l four rows of column 4l + s (`u[s]` for rows 0..4, `u[s + 4]` for
/// rows 4..8); the last round moves those lanes into column order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,bmi2")]
fn transpose_8x16(r: [std::arch::x86_64::__m512; 8]) -> [std::arch::x86_64::__m512; 8] {
    use std::arch::x86_64::*;
    let t: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    // u[s]: column 4l + s of rows 0..4 in lane l; u[s + 4]: the same for rows 4..8
    let u: [__m512; 8] = std::array::from_fn(|i| {
        let (base, s) = (i / 4 * 4, i % 4);
        let (a, b) = (t[base + s / 2], t[base + s / 2 + 2]);
        if s % 2 == 0 {
            ps(_mm512_unpacklo_pd(pd(a), pd(b)))
        } else {
            ps(_mm512_unpackhi_pd(pd(a), pd(b)))
        }
    });
    let mut out = [_mm512_setzero_ps(); 8];
    for s in [0, 2] {
        // columns 4l + s and 4l + s + 1 for l = 0..4 go to out[2l + s/2]
        let lo_a = _mm512_shuffle_f32x4::<0x44>(u[s], u[s + 4]);
        let lo_b = _mm512_shuffle_f32x4::<0x44>(u[s + 1], u[s + 5]);
        let hi_a = _mm512_shuffle_f32x4::<0xEE>(u[s], u[s + 4]);
        let hi_b = _mm512_shuffle_f32x4::<0xEE>(u[s + 1], u[s + 5]);
        out[s / 2] = _mm512_shuffle_f32x4::<0x88>(lo_a, lo_b);
        out[2 + s / 2] = _mm512_shuffle_f32x4::<0xDD>(lo_a, lo_b);
        out[4 + s / 2] = _mm512_shuffle_f32x4::<0x88>(hi_a, hi_b);
        out[6 + s / 2] = _mm512_shuffle_f32x4::<0xDD>(hi_a, hi_b);
    }
    out
}

/// The packing of both operands: `panel[p·width + w] = x(w, p)` for w < used (zero for
/// used ≤ w < width) and p < depth, where `x(w, p)` is at `origin + w·w_stride + p·p_stride`.
///
/// The common layouts take fast paths: `w_stride == 1` copies runs of `used` values (rows of B,
/// columns of a transposed A), `p_stride == 1` transposes blocks of 8 so that both the reads and
/// the writes stay sequential.
pub(super) unsafe fn gather<T: Real>(
    panel: &mut [T],
    width: usize,
    origin: *const T,
    (w_stride, p_stride): (isize, isize),
    used: usize,
    depth: usize,
) {
    // SAFETY (all reads below): the caller guarantees x(w, p) is readable for w < used, p < depth.
    let at = |w: usize, p: usize| unsafe { *origin.offset(w as isize * w_stride + p as isize * p_stride) };
    if w_stride == 1 {
        for (p, dst) in panel.chunks_exact_mut(width).enumerate() {
            let src = unsafe { std::slice::from_raw_parts(origin.offset(p as isize * p_stride), used) };
            dst[..used].copy_from_slice(src);
            dst[used..].fill(T::ZERO);
        }
        return;
    }
    if p_stride == 1 {
        const B: usize = 8;
        let full_w = used / B * B;
        let full_p = depth / B * B;
        for w0 in (0..full_w).step_by(B) {
            let rows: [&[T]; B] = std::array::from_fn(|r| unsafe {
                std::slice::from_raw_parts(origin.offset((w0 + r) as isize * w_stride), depth)
            });
            for p0 in (0..full_p).step_by(B) {
                // an 8 x 8 block: read 8 runs of 8, write 8 runs of 8
                let block: [[T; B]; B] = std::array::from_fn(|r| std::array::from_fn(|c| rows[r][p0 + c]));
                for c in 0..B {
                    let dst = &mut panel[(p0 + c) * width + w0..(p0 + c) * width + w0 + B];
                    for r in 0..B {
                        dst[r] = block[r][c];
                    }
                }
            }
            for p in full_p..depth {
                for r in 0..B {
                    panel[p * width + w0 + r] = rows[r][p];
                }
            }
        }
        for w in full_w..used {
            for p in 0..depth {
                panel[p * width + w] = at(w, p);
            }
        }
    } else {
        for p in 0..depth {
            for w in 0..used {
                panel[p * width + w] = at(w, p);
            }
        }
    }
    if used < width {
        for dst in panel.chunks_exact_mut(width) {
            dst[used..].fill(T::ZERO);
        }
    }
}
