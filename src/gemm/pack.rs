//! Packing the operands into the panels the micro-kernels read (each panel copied by its kernel's
//! `pack`), and prefetching the next panel's source while one is packed.

use super::kernel::MicroKernel;
use super::Operand;
use crate::scalar::Real;

/// Packs rows `ic..ic+mc`, depth `pc..pc+kc` of op(A) into MR-tall panels, zero-padded to a
/// multiple of MR rows: value (r, p) of panel q goes to `q·kc·MR + p·MR + r`.
pub(super) unsafe fn pack_a<T: Real, K: MicroKernel<T>>(
    dst: *mut T,
    a: Operand<T>,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
) {
    for (q, i0) in (0..mc).step_by(K::MR).enumerate() {
        let rows = K::MR.min(mc - i0);
        // SAFETY: the workspace holds ⌈mc/MR⌉ panels of kc·MR values.
        let panel = unsafe { std::slice::from_raw_parts_mut(dst.add(q * kc * K::MR), kc * K::MR) };
        let origin = a.ptr.wrapping_offset((ic + i0) as isize * a.rs + pc as isize * a.cs);
        // SAFETY: (ic+i0+r, pc+p) lies inside op(A) for r < rows, p < kc.
        unsafe { K::pack(panel, K::MR, origin, (a.rs, a.cs), rows, kc) };
    }
}

/// Packs depth `pc..pc+kc`, columns `jc..jc+nc` of op(B) into NR-wide panels, zero-padded to a
/// multiple of NR columns: value (p, j) of panel q goes to `q·kc·NR + p·NR + j`.
pub(super) unsafe fn pack_b<T: Real, K: MicroKernel<T>>(
    dst: *mut T,
    b: Operand<T>,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
) {
    for (q, j0) in (0..nc).step_by(K::NR).enumerate() {
        let cols = K::NR.min(nc - j0);
        // SAFETY: the workspace holds ⌈nc/NR⌉ panels of kc·NR values.
        let panel = unsafe { std::slice::from_raw_parts_mut(dst.add(q * kc * K::NR), kc * K::NR) };
        let origin = b.ptr.wrapping_offset(pc as isize * b.rs + (jc + j0) as isize * b.cs);
        let next = j0 + K::NR;
        if next < nc {
            let next_origin = b.ptr.wrapping_offset(pc as isize * b.rs + (jc + next) as isize * b.cs);
            prefetch_panel(next_origin, (b.cs, b.rs), K::NR.min(nc - next), kc);
        }
        // SAFETY: (pc+p, jc+j0+j) lies inside op(B) for p < kc, j < cols.
        unsafe { K::pack(panel, K::NR, origin, (b.cs, b.rs), cols, kc) };
    }
}

/// Asks for the source of the next panel to be brought into L2 while this one is packed (the
/// hardware prefetcher sees only short runs in a transposed read: 16 cache lines per row). W1
/// steps ran 1.5–2.3% faster with it (interleaved in-process A/B, BENCHMARKS.md).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(super) fn prefetch_panel<T>(origin: *const T, (w_stride, p_stride): (isize, isize), used: usize, depth: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let line = (64 / std::mem::size_of::<T>()).max(1);
        let fetch = |at: isize| {
            // SAFETY: prefetching never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(origin.wrapping_offset(at) as *const i8) }
        };
        if p_stride == 1 {
            for w in 0..used {
                (0..depth).step_by(line).for_each(|p| fetch(w as isize * w_stride + p as isize));
            }
        } else if w_stride == 1 {
            for p in 0..depth {
                (0..used).step_by(line).for_each(|w| fetch(p as isize * p_stride + w as isize));
            }
        }
    }
}
