//! Statistical properties of dropout, with fixed seeds and tolerances derived from the sampling
//! distribution (written beside each assertion).

use dropnet::dropout::{threshold, BitMask, Dropout, Keep, MaskDraw};
use dropnet::layer::{Dense, Noise};
use dropnet::rng::Stream;
use dropnet::stack::{NoiseKind, NoiseSpec, Shape};
use dropnet::{Activation, Matrix, Mode, Scaling};

/// Bernoulli noise with `KEEP` per unit, the first noise of its stack (mask layer 0).
fn noise(scaling: Scaling) -> Option<Noise<f64>> {
    let spec = NoiseSpec::new(NoiseKind::Bernoulli, KEEP.to_vec(), scaling);
    Some(Noise::new(&spec, Shape::Flat(KEEP.len()), 0).unwrap())
}

const KEEP: [f64; 8] = [0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0];

#[test]
fn kept_fraction_of_every_unit_matches_its_keep() {
    let rows = 20_000;
    let draw = MaskDraw { seed: 3, stream: Stream::Mask, layer: 0, step: 0, first_row: 0 };
    let thresholds: Vec<u64> = KEEP.iter().map(|&p| threshold(p)).collect();
    let mut mask = BitMask::default();
    mask.draw(rows, KEEP.len(), &draw, &thresholds);
    for (k, &p) in KEEP.iter().enumerate() {
        let kept = mask.column_count(k) as f64;
        // binomial(rows, p): mean rows·p, sd sqrt(rows·p·(1−p)); allow 4 sd (keep = 1: exactly all)
        let sd = (rows as f64 * p * (1.0 - p)).sqrt();
        assert!((kept - rows as f64 * p).abs() <= 4.0 * sd, "unit {k}: kept {kept} of {rows} at keep {p}");
    }
}

/// A linear layer (identity activation) with fixed weights, its input dropped with `KEEP`.
fn linear_layer(scaling: Scaling, column_scale: &[f64]) -> Dense<f64> {
    let weight = Matrix::from_fn(3, KEEP.len(), |j, k| (0.3 + 0.1 * j as f64 - 0.07 * k as f64) * column_scale[k]);
    Dense::new(weight, vec![0.1, -0.2, 0.3], Activation::Identity, noise(scaling)).unwrap()
}

fn input_row() -> Vec<f64> {
    (0..KEEP.len()).map(|k| 1.0 + 0.25 * k as f64).collect()
}

/// Mean over `samples` train-mode outputs of one input (one per row, each row its own mask) and
/// the standard deviation of that mean from the exact variance of the mask sum.
fn train_mean_and_sd(layer: &mut Dense<f64>, samples: usize, scale_kept: impl Fn(f64) -> f64) -> (Vec<f64>, Vec<f64>) {
    let a = input_row();
    let x = Matrix::from_fn(samples, KEEP.len(), |_, k| a[k]);
    layer.forward(&x, Mode::Train { step: 0 }, 11).unwrap();
    let z = layer.output();
    let mean: Vec<f64> = (0..3).map(|j| (0..samples).map(|i| z.get(i, j)).sum::<f64>() / samples as f64).collect();
    // z_j = Σ_k w[j,k] s_k r_k a_k + b_j with s_k the kept-unit factor: Var = Σ_k (w s a)² p (1−p)
    let sd = (0..3)
        .map(|j| {
            let var: f64 = (0..KEEP.len())
                .map(|k| (layer.weight.get(j, k) * scale_kept(KEEP[k]) * a[k]).powi(2) * KEEP[k] * (1.0 - KEEP[k]))
                .sum();
            (var / samples as f64).sqrt()
        })
        .collect();
    (mean, sd)
}

fn eval_output(layer: &mut Dense<f64>) -> Vec<f64> {
    let x = Matrix::from_vec(1, KEEP.len(), input_row()).unwrap();
    layer.forward(&x, Mode::Eval, 0).unwrap();
    layer.output().row(0).to_vec()
}

#[test]
fn eval_output_equals_the_mean_of_train_outputs() {
    for (scaling, scale_kept) in
        [(Scaling::Inverted, (|p: f64| 1.0 / p) as fn(f64) -> f64), (Scaling::Standard, |_| 1.0)]
    {
        let mut layer = linear_layer(scaling, &[1.0; 8]);
        let eval = eval_output(&mut layer);
        let (mean, sd) = train_mean_and_sd(&mut layer, 50_000, scale_kept);
        for j in 0..3 {
            // the mean of 50000 independent outputs is within 4 of its standard deviations of E[z]
            assert!(
                (mean[j] - eval[j]).abs() <= 4.0 * sd[j],
                "{scaling} unit {j}: mean {} vs eval {}",
                mean[j],
                eval[j]
            );
        }
    }
}

#[test]
fn inverted_and_standard_dropout_agree_in_expectation() {
    // Standard dropout with weights W and inverted dropout with weights W·diag(keep) are the same
    // function in training (same masks: same seed and address) and in evaluation.
    let mut standard = linear_layer(Scaling::Standard, &[1.0; 8]);
    let mut inverted = linear_layer(Scaling::Inverted, &KEEP);
    let a = input_row();
    let x = Matrix::from_fn(1000, KEEP.len(), |_, k| a[k]);
    standard.forward(&x, Mode::Train { step: 3 }, 5).unwrap();
    inverted.forward(&x, Mode::Train { step: 3 }, 5).unwrap();
    for (s, i) in standard.output().as_slice().iter().zip(inverted.output().as_slice()) {
        assert!((s - i).abs() < 1e-12, "train outputs differ: {s} vs {i}");
    }
    let (es, ei) = (eval_output(&mut standard), eval_output(&mut inverted));
    for j in 0..3 {
        assert!((es[j] - ei[j]).abs() < 1e-12, "eval outputs differ: {} vs {}", es[j], ei[j]);
    }
    // and their common eval output is the expectation of the train outputs
    let (mean, sd) = train_mean_and_sd(&mut standard, 50_000, |_| 1.0);
    for j in 0..3 {
        assert!((mean[j] - es[j]).abs() <= 4.0 * sd[j]);
    }
}

#[test]
fn forward_and_backward_use_the_same_mask_bits() {
    // With W = I and a = 1: ã = r/keep, and with ∂J/∂z = 1 backward gives ∂J/∂a = r/keep too.
    let n = KEEP.len();
    let identity = Matrix::from_fn(n, n, |j, k| if j == k { 1.0 } else { 0.0 });
    let mut layer = Dense::new(identity, vec![0.0; n], Activation::Identity, noise(Scaling::Inverted)).unwrap();
    let ones = Matrix::from_fn(64, n, |_, _| 1.0);
    layer.forward(&ones, Mode::Train { step: 1 }, 8).unwrap();
    let mut da = Matrix::zeros(0, 0);
    layer.backward(&ones, Some(&mut da)).unwrap();
    let mask = layer.noise.as_ref().unwrap().mask().unwrap();
    let mut dropped = 0;
    for i in 0..64 {
        for (k, &p) in KEEP.iter().enumerate() {
            let expected = if mask.get(i, k) { 1.0 / p } else { 0.0 };
            assert_eq!(layer.a_tilde().get(i, k), expected);
            assert_eq!(da.get(i, k), expected);
            dropped += usize::from(!mask.get(i, k));
        }
    }
    assert!(dropped > 0, "the mask dropped nothing; the test would prove nothing");
}

#[test]
fn a_mask_given_by_the_caller_replaces_the_drawn_one() {
    let mut dropout = Dropout::<f64>::new(Keep::uniform(0.5, 3).unwrap(), Scaling::Inverted);
    let fixed = BitMask::from_bools(2, 3, &[true, false, true, false, false, true]).unwrap();
    dropout.set_fixed_mask(Some(fixed));
    let a = Matrix::from_vec(2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let mut a_tilde = Matrix::zeros(0, 0);
    let draw = MaskDraw { seed: 1, stream: Stream::Mask, layer: 0, step: 0, first_row: 0 };
    dropout.forward(&a, &mut a_tilde, Some(&draw)).unwrap();
    assert_eq!(a_tilde.as_slice(), &[2.0, 0.0, 6.0, 0.0, 0.0, 12.0]);
    // a fixed mask of the wrong shape is an error, not a panic
    let err = dropout.forward(&Matrix::zeros(3, 3), &mut a_tilde, Some(&draw)).unwrap_err();
    assert!(err.to_string().contains("fixed mask is 2x3"), "{err}");
}

#[test]
fn standard_eval_multiplies_by_keep_and_inverted_eval_is_the_identity() {
    let a = Matrix::from_fn(2, KEEP.len(), |i, k| (i + k) as f64 + 0.5);
    for scaling in [Scaling::Inverted, Scaling::Standard] {
        let mut dropout = Dropout::<f64>::new(Keep::per_unit(KEEP.to_vec()).unwrap(), scaling);
        let mut out = Matrix::zeros(0, 0);
        dropout.forward(&a, &mut out, None).unwrap();
        for i in 0..2 {
            for (k, &p) in KEEP.iter().enumerate() {
                let factor = if scaling == Scaling::Standard { p } else { 1.0 };
                assert_eq!(out.get(i, k), a.get(i, k) * factor);
            }
        }
    }
}

#[test]
fn a_dropconnect_sample_is_one_weight_mask_for_every_example_whatever_the_batch() {
    let stack = dropnet::stack::Stack::parse("5,dropconnect0.5,dense7,relu,dense3", Scaling::Inverted).unwrap();
    let mut net = dropnet::Network::<f64>::new(&dropnet::Architecture::new(stack), 2).unwrap();
    let x = Matrix::from_fn(4, 5, |i, k| 1.0 + ((i * 5 + k) % 7) as f64);
    let whole = net.forward(&x, dropnet::Mode::McSample { sample: 3, first_row: 0 }).unwrap().clone();
    let tail = Matrix::from_fn(2, 5, |i, k| x.get(i + 2, k));
    let part = net.forward(&tail, dropnet::Mode::McSample { sample: 3, first_row: 2 }).unwrap().clone();
    for i in 0..2 {
        assert_eq!(part.row(i), whole.row(i + 2), "example {}", i + 2);
    }
    // another sample draws another mask (35 weights at keep 0.5: the same mask has chance 2^-35)
    let other = net.forward(&x, dropnet::Mode::McSample { sample: 4, first_row: 0 }).unwrap().clone();
    assert_ne!(other.as_slice(), whole.as_slice());
}
