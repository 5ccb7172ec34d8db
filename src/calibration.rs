//! How good a classifier's probabilities are, not only its classes: negative log-likelihood,
//! Brier score, expected calibration error and its reliability bins, and the AUROC of an
//! uncertainty score for telling two data sets apart (math.md, U1–U4).
//!
//! ```text
//! nll   = (1/n) Σ_i −ln p_i[y_i]                                                        (U1)
//! brier = (1/n) Σ_i Σ_c (p_i[c] − 1[c = y_i])²                                          (U2)
//! ece   = Σ_b (n_b/n) · |accuracy_b − confidence_b|, 15 equal-width bins of max_c p_i[c] (U3)
//! auroc = P(score of an out-of-distribution example > score of an in-distribution one),
//!         ties counting one half                                                        (U4)
//! ```

use crate::error::{Error, Result};

/// Bins of the expected calibration error (U3).
pub const ECE_BINS: usize = 15;

/// Probabilities are floored here before the logarithm of U1: the smallest normal f32, so that a
/// true class whose probability underflowed costs at most ln(1/1.18e-38) ≈ 87.3 nats, not ∞.
const PROBABILITY_FLOOR: f64 = f32::MIN_POSITIVE as f64;

/// One bin of the reliability diagram: examples whose top probability fell in `[lower, upper)`
/// (the last bin includes 1).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Bin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    /// Mean top probability of the bin's examples (0 for an empty bin).
    pub confidence: f64,
    /// Fraction of the bin's examples whose top class is the label (0 for an empty bin).
    pub accuracy: f64,
}

/// The calibration of a set of class-probability rows against their labels.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Calibration {
    pub nll: f64,
    pub brier: f64,
    pub ece: f64,
    pub bins: Vec<Bin>,
}

/// U1–U3 of the probability rows `probabilities` (one per example) against `labels`.
pub fn calibration<'a>(
    probabilities: impl ExactSizeIterator<Item = &'a [f32]>,
    labels: &[usize],
) -> Result<Calibration> {
    if probabilities.len() != labels.len() || labels.is_empty() {
        return Err(Error::Config(format!(
            "calibration needs one probability row per label and at least one: {} rows, {} labels",
            probabilities.len(),
            labels.len()
        )));
    }
    let n = labels.len() as f64;
    let (mut nll, mut brier) = (0.0, 0.0);
    let mut sums = vec![(0usize, 0.0f64, 0usize); ECE_BINS]; // (count, Σ confidence, correct)
    for (p, &y) in probabilities.zip(labels) {
        if y >= p.len() {
            return Err(Error::Config(format!("label {y} is outside the model's {} classes", p.len())));
        }
        nll -= (p[y] as f64).max(PROBABILITY_FLOOR).ln();
        brier += p.iter().enumerate().map(|(c, &q)| (q as f64 - if c == y { 1.0 } else { 0.0 }).powi(2)).sum::<f64>();
        let top = crate::eval::argmax(p);
        let confidence = p[top] as f64;
        let bin = ((confidence * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        sums[bin].0 += 1;
        sums[bin].1 += confidence;
        sums[bin].2 += usize::from(top == y);
    }
    let bins: Vec<Bin> = sums
        .iter()
        .enumerate()
        .map(|(b, &(count, confidence, correct))| {
            let mean = |v: f64| if count == 0 { 0.0 } else { v / count as f64 };
            Bin {
                lower: b as f64 / ECE_BINS as f64,
                upper: (b + 1) as f64 / ECE_BINS as f64,
                count,
                confidence: mean(confidence),
                accuracy: mean(correct as f64),
            }
        })
        .collect();
    let ece = bins.iter().map(|b| b.count as f64 / n * (b.accuracy - b.confidence).abs()).sum();
    Ok(Calibration { nll: nll / n, brier: brier / n, ece, bins })
}

/// U4: the area under the ROC curve of `score` for telling `outside` (positives) from `inside`,
/// by ranks (the Mann–Whitney statistic), ties counting one half.
pub fn auroc(inside: &[f64], outside: &[f64]) -> Result<f64> {
    if inside.is_empty() || outside.is_empty() || inside.iter().chain(outside).any(|s| !s.is_finite()) {
        return Err(Error::Config("the AUROC needs finite scores on both sides".into()));
    }
    let mut all: Vec<(f64, bool)> =
        inside.iter().map(|&s| (s, false)).chain(outside.iter().map(|&s| (s, true))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Σ over positives of their rank (1-based, tied scores sharing their mean rank)
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * all[i..j].iter().filter(|e| e.1).count() as f64;
        i = j;
    }
    let (pos, neg) = (outside.len() as f64, inside.len() as f64);
    Ok((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scores_of_three_examples_are_their_definitions() {
        let rows: [&[f32]; 3] = [&[0.7, 0.2, 0.1], &[0.25, 0.5, 0.25], &[0.1, 0.05, 0.85]];
        let labels = [0, 2, 2];
        let c = calibration(rows.iter().copied(), &labels).unwrap();
        let nll = -((0.7f32 as f64).ln() + (0.25f32 as f64).ln() + (0.85f32 as f64).ln()) / 3.0;
        assert!((c.nll - nll).abs() < 1e-12, "{c:?}");
        let brier = ((0.3f64.powi(2) + 0.04 + 0.01) + (0.0625 + 0.25 + 0.5625) + (0.01 + 0.0025 + 0.0225)) / 3.0;
        assert!((c.brier - brier).abs() < 1e-6, "{c:?}");
        // top probabilities 0.7 (bin 10, right), 0.5 (bin 7, wrong), 0.85 (bin 12, right)
        assert_eq!([c.bins[10].count, c.bins[7].count, c.bins[12].count], [1, 1, 1]);
        let ece = (0.3 + 0.5 + 0.15) / 3.0;
        assert!((c.ece - ece).abs() < 1e-6, "{c:?}");
        assert_eq!(c.bins.iter().map(|b| b.count).sum::<usize>(), 3);
    }

    #[test]
    fn a_certain_top_probability_falls_in_the_last_bin_and_zero_is_floored() {
        let rows: [&[f32]; 2] = [&[1.0, 0.0], &[1.0, 0.0]];
        let c = calibration(rows.iter().copied(), &[0, 1]).unwrap();
        assert_eq!(c.bins[ECE_BINS - 1].count, 2);
        assert!((c.nll - (-(PROBABILITY_FLOOR.ln())) / 2.0).abs() < 1e-9 && c.nll < 44.0, "{c:?}");
        assert!((c.ece - 0.5).abs() < 1e-12);
    }

    #[test]
    fn auroc_counts_ordered_pairs_and_halves_ties() {
        assert_eq!(auroc(&[0.1, 0.2], &[0.3, 0.4]).unwrap(), 1.0);
        assert_eq!(auroc(&[0.3, 0.4], &[0.1, 0.2]).unwrap(), 0.0);
        // pairs (in, out): (1,2) yes, (1,1) tie, (3,2) no, (3,1) no → 1.5 of 4
        assert_eq!(auroc(&[1.0, 3.0], &[2.0, 1.0]).unwrap(), 0.375);
        assert!(auroc(&[], &[1.0]).is_err() && auroc(&[f64::NAN], &[1.0]).is_err());
    }
}
