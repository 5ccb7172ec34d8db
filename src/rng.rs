//! Philox4x32-10, the counter-based generator behind every random number in dropnet.
//!
//! Philox (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3", SC 2011)
//! maps a 128-bit counter and a 64-bit key to 128 random bits with ten rounds of multiply-xor.
//! Because the output is a pure function of (counter, key), any random number can be computed
//! directly from its address, by any thread, in any order: that is what makes dropout masks the
//! same for 1 or N threads and lets a resumed run continue bit for bit.
//!
//! # Addresses
//! The key is the run's 64-bit seed: `key = [seed mod 2^32, seed >> 32]`. The counter is
//! `[block, row, step, stream << 24 | layer]`, where [`Stream`] separates independent uses
//! (training masks, Monte-Carlo masks, weight init, shuffling, ...). `docs/masks.md` spells out
//! how a dropout mask bit is read from this; the tests check its table of vectors.

/// Multipliers and Weyl key increments of Philox4x32 (Salmon et al. 2011, table 2).
pub(crate) const M0: u32 = 0xD251_1F53;
pub(crate) const M1: u32 = 0xCD9E_8D57;
pub(crate) const W0: u32 = 0x9E37_79B9;
pub(crate) const W1: u32 = 0xBB67_AE85;

/// One Philox4x32 round: two 32×32→64-bit multiplies, then mix the halves with the other words
/// and the round key.
#[inline(always)]
fn round(c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let p0 = (M0 as u64) * (c[0] as u64);
    let p1 = (M1 as u64) * (c[2] as u64);
    let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
    let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
    [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
}

/// Philox4x32-10: ten rounds, the key bumped by the Weyl constants between rounds.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for r in 0..10 {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        c = round(c, k);
    }
    c
}

/// The independent uses of the generator. The value goes into the top byte of counter word 3, so
/// two streams never share a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stream {
    /// Dropout masks of training steps.
    Mask = 0,
    /// Dropout masks of Monte-Carlo prediction samples.
    McMask = 1,
    /// Initial weights.
    Init = 2,
    /// The order of examples in each epoch.
    Shuffle = 3,
    /// The choice of validation examples.
    Split = 4,
    /// Inputs and parameters drawn by the gradient check.
    Gradcheck = 5,
}

/// The Philox key of a seed: its low and high 32-bit halves.
#[inline]
pub fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The counter of a block: `[block, row, step, stream << 24 | layer]`. `layer` must be < 2^24.
#[inline]
pub fn counter(stream: Stream, layer: u32, step: u32, row: u32, block: u32) -> [u32; 4] {
    debug_assert!(layer < 1 << 24);
    [block, row, step, (stream as u32) << 24 | layer]
}

/// A uniform draw in the open interval (0, 1) from 32 random bits: `(u + 0.5) / 2^32`.
#[inline]
pub fn unit_open(u: u32) -> f64 {
    (u as f64 + 0.5) * (1.0 / 4_294_967_296.0)
}

/// A sequential reader of one stream, for uses that consume numbers in a fixed order (weight init,
/// shuffling). Word `w` of the sequence is word `w mod 4` of
/// `philox4x32_10(counter(stream, layer, step, 0, w / 4), key(seed))`.
#[derive(Clone, Debug)]
pub struct StreamRng {
    key: [u32; 2],
    stream: Stream,
    layer: u32,
    step: u32,
    block: u32,
    words: [u32; 4],
    used: usize,
}

impl StreamRng {
    pub fn new(seed: u64, stream: Stream, layer: u32, step: u32) -> Self {
        Self { key: key(seed), stream, layer, step, block: 0, words: [0; 4], used: 4 }
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            let ctr = counter(self.stream, self.layer, self.step, 0, self.block);
            self.words = philox4x32_10(ctr, self.key);
            self.block = self.block.wrapping_add(1);
            self.used = 0;
        }
        self.used += 1;
        self.words[self.used - 1]
    }

    /// A uniform draw in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        unit_open(self.next_u32())
    }

    /// A standard normal draw (Box–Muller, cosine branch, from two consecutive words).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A uniform integer in `0..n` (n ≥ 1) by Lemire's multiply-shift with rejection, so every
    /// value is exactly equally likely.
    pub fn below(&mut self, n: u32) -> u32 {
        assert!(n > 0, "below(0)");
        let threshold = n.wrapping_neg() % n; // 2^32 mod n
        loop {
            let product = self.next_u32() as u64 * n as u64;
            if (product as u32) >= threshold {
                return (product >> 32) as u32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Philox4x32-10 published with Random123 (file `kat_vectors`):
    /// counter, key → output.
    #[test]
    fn philox_matches_random123_known_answers() {
        let cases = [
            ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
            ([u32::MAX; 4], [u32::MAX; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (ctr, k, expected) in cases {
            assert_eq!(philox4x32_10(ctr, k), expected);
        }
    }

    #[test]
    fn stream_words_are_the_documented_blocks() {
        let mut rng = StreamRng::new(0x1234_5678_9abc_def0, Stream::Init, 3, 7);
        let b0 = philox4x32_10(counter(Stream::Init, 3, 7, 0, 0), key(0x1234_5678_9abc_def0));
        let b1 = philox4x32_10(counter(Stream::Init, 3, 7, 0, 1), key(0x1234_5678_9abc_def0));
        let got: Vec<u32> = (0..8).map(|_| rng.next_u32()).collect();
        assert_eq!(got, [b0, b1].concat());
    }

    #[test]
    fn normal_draws_have_unit_mean_and_variance() {
        let mut rng = StreamRng::new(9, Stream::Gradcheck, 0, 0);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // mean has sd 1/sqrt(n) = 0.0032; the variance estimate has sd sqrt(2/n) = 0.0045: 4 sd each
        assert!(mean.abs() < 4.0 * 0.0032, "mean {mean}");
        assert!((var - 1.0).abs() < 4.0 * 0.0045, "variance {var}");
    }

    #[test]
    fn below_is_uniform() {
        let mut rng = StreamRng::new(5, Stream::Shuffle, 0, 0);
        let n = 60_000;
        let mut counts = [0u32; 6];
        for _ in 0..n {
            counts[rng.below(6) as usize] += 1;
        }
        // each count is binomial(60000, 1/6): sd = sqrt(60000 * 1/6 * 5/6) = 91.3; allow 4 sd
        for c in counts {
            assert!((c as f64 - 10_000.0).abs() < 4.0 * 91.3, "{counts:?}");
        }
    }
}
