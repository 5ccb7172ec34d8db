//! A matrix of mask bits, packed 64 to a word: how masks are kept for backward (1 bit per unit).

use super::MaskDraw;
use crate::error::{shape, Result};
use crate::rng::{counter, key, philox4x32_10};
use rayon::prelude::*;

/// A `rows × cols` matrix of mask bits, packed 64 to a word, each row starting on a new word.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BitMask {
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) words_per_row: usize,
    pub(super) words: Vec<u64>,
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

    /// The words of row `i`: bit `k mod 64` of word `k / 64` is unit k's.
    #[inline]
    pub fn row_words(&self, i: usize) -> &[u64] {
        &self.words[i * self.words_per_row..(i + 1) * self.words_per_row]
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
