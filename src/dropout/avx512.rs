//! The fused dropout pass for f32 with AVX-512 intrinsics: 16 Philox blocks as two vectors, the
//! threshold compare as a vector mask, the 64 mask bits interleaved with BMI2 `pdep`, and the scaled
//! copy as masked multiplies. Bit for bit the same as the portable path (tested).

use super::kernels::{mask_row_portable, task_rows, LaneThresholds, RowsDraw};
use crate::rng::{M0, M1, W0, W1};
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
                k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
            }
            *round_key = [_mm512_set1_epi32(k[0] as i32), _mm512_set1_epi32(k[1] as i32)];
        }
        let m0 = _mm512_set1_epi32(M0 as i32);
        let m1 = _mm512_set1_epi32(M1 as i32);
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
/// and two permutes per mulhilo to put hi and lo back in lane order, which this layout saves;
/// BENCHMARKS.md has the measurement.)
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
/// on W2 (harness in BENCHMARKS.md): 512 to 2048 bytes ahead gave 1–27%
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
unsafe fn scaled_copy(word: u64, vectors: usize, at: usize, scale: &[f32], x: &[f32], out: &mut [f32], stream: bool) {
    for q in 0..vectors {
        let at = at + q * 16;
        let kept = (word >> (16 * q)) as u16;
        let v = _mm512_maskz_mul_ps(kept, _mm512_loadu_ps(x.as_ptr().add(at)), _mm512_loadu_ps(scale.as_ptr().add(at)));
        if stream {
            _mm512_stream_ps(out.as_mut_ptr().add(at), v);
        } else {
            _mm512_storeu_ps(out.as_mut_ptr().add(at), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernels::{draw_rows_portable, mask_row_portable, LaneThresholds, RowsDraw};
    use super::super::threshold;
    use super::{draw_rows_f32, mask_row_f32_stream};
    use crate::rng::{counter, key, Stream};
    use crate::tensor::Matrix;

    #[test]
    fn the_f32_intrinsics_kernel_equals_the_portable_one() {
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
                unsafe { draw_rows_f32(&rows, &lanes, &scale, &x, &mut out_b, &mut bits_b, false) };
                assert_eq!(bits_a, bits_b, "{cols} columns");
                assert_eq!(out_a, out_b, "{cols} columns");
                // the streaming stores write the same values (64-byte aligned rows of 16k values)
                if cols % 16 == 0 {
                    let mut aligned = Matrix::<f32>::zeros(n_rows, cols);
                    let mut bits_c = vec![0u64; words];
                    unsafe { draw_rows_f32(&rows, &lanes, &scale, &x, aligned.as_mut_slice(), &mut bits_c, true) };
                    assert_eq!((aligned.as_slice(), &bits_c), (&out_a[..], &bits_a));
                }
            }
        } else {
            eprintln!("skipped: this CPU lacks {}", crate::cpu::AVX512_FEATURES);
        }
    }

    #[test]
    fn the_streaming_mask_kernel_equals_the_cached_one() {
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
                unsafe { mask_row_f32_stream(&bits, &scale, &x, aligned.as_mut_slice()) };
                assert_eq!(aligned.as_slice(), &cached[..], "{cols} columns");
            }
        } else {
            eprintln!("skipped: this CPU lacks {}", crate::cpu::AVX512_FEATURES);
        }
    }
}
