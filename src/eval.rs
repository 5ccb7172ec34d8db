//! Evaluation: classification error and loss in `Eval` mode, and Monte-Carlo dropout predictions
//! (mean class probabilities over T `McSample` passes, their spread, predictive entropy and mutual
//! information).

use crate::activation::{sigmoid, softmax_row};
use crate::data::{Batch, Dataset};
use crate::error::Result;
use crate::loss::{Loss, Targets};
use crate::network::{Mode, Network};
use crate::tensor::Matrix;
use rayon::prelude::*;

/// Examples per forward pass when evaluating, at most.
pub const EVAL_BATCH: usize = 1000;

/// Values of one layer's activations per evaluation pass, at most (32 MB in f32): a wide
/// convolutional layer evaluates fewer examples at a time, so its workspaces stay bounded.
const EVAL_VALUES: usize = 1 << 23;

/// Examples per evaluation pass of `net`: [`EVAL_BATCH`], fewer when a layer is wide.
pub fn eval_batch(net: &Network<f32>) -> usize {
    eval_rows(net.plans())
}

/// Examples per evaluation pass of a network of `plans` (see [`eval_batch`]).
pub fn eval_rows(plans: &[crate::layer::Plan]) -> usize {
    let widest = plans.iter().map(|p| p.input.units().max(p.output.units())).max().unwrap_or(1);
    (EVAL_VALUES / widest.max(1)).clamp(1, EVAL_BATCH)
}

/// Every forward pass of a prediction over the examples of `x`: one `Eval` pass per batch of
/// [`eval_batch`] examples when `mc` is `None`, else `mc` Monte-Carlo passes per batch, masks
/// addressed by example index (rows `first_row + i`) so that nothing depends on the batch size or
/// thread count. `each(start, out)` hears every pass: the index of its first example and the
/// network's output for its examples.
pub(crate) fn for_each_pass(
    net: &mut Network<f32>,
    x: &Matrix<f32>,
    mc: Option<u32>,
    mut each: impl FnMut(usize, &Matrix<f32>),
) -> Result<()> {
    let mut batch = Matrix::zeros(0, 0);
    let per_pass = eval_batch(net);
    for start in (0..x.rows()).step_by(per_pass) {
        let end = (start + per_pass).min(x.rows());
        batch.ensure_shape(end - start, x.cols());
        for (r, i) in (start..end).enumerate() {
            batch.row_mut(r).copy_from_slice(x.row(i));
        }
        for t in 0..mc.unwrap_or(1).max(1) {
            let mode = if mc.is_some() { Mode::McSample { sample: t, first_row: start as u32 } } else { Mode::Eval };
            net.forward(&batch, mode)?;
            check_finite(net, start)?;
            each(start, net.output());
        }
    }
    Ok(())
}

/// An error when the output of the last pass (examples from `start` on) is not finite, naming
/// the example and the first layer that produced a value that is not: a prediction of NaN is no
/// prediction (forged or diverged weights, a keep that underflowed).
fn check_finite(net: &Network<f32>, start: usize) -> Result<()> {
    let out = net.output();
    let Some(at) = out.as_slice().iter().position(|v| !v.is_finite()) else { return Ok(()) };
    let example = start + at / out.cols().max(1);
    let layer = net.first_non_finite_output().unwrap_or_else(|| "the last one".into());
    Err(crate::Error::Config(format!(
        "the network's output for example {example} is not finite: the first layer to produce a value that is not is \
         {layer} (the weights are damaged or diverged)"
    )))
}

/// Index of the largest value.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = j;
        }
    }
    best
}

/// One-hot rows of `labels` with `classes` columns (the targets of MSE and BCE on class labels).
pub fn one_hot(labels: &[usize], classes: usize, out: &mut Matrix<f32>) {
    out.ensure_shape(labels.len(), classes);
    out.as_mut_slice().fill(0.0);
    for (i, &y) in labels.iter().enumerate() {
        if y < classes {
            out.set(i, y, 1.0);
        }
    }
}

/// The loss against class labels, whatever its target form.
pub fn loss_on_labels(
    loss: Loss,
    output: &Matrix<f32>,
    labels: &[usize],
    one_hot_buf: &mut Matrix<f32>,
    grad: &mut Matrix<f32>,
) -> Result<f64> {
    match loss {
        Loss::SoftmaxCrossEntropy => loss.compute(output, Targets::Labels(labels), grad),
        _ => {
            if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &y)| y >= output.cols()) {
                return Err(crate::Error::Label { label, index, classes: output.cols() });
            }
            one_hot(labels, output.cols(), one_hot_buf);
            loss.compute(output, Targets::Values(one_hot_buf), grad)
        }
    }
}

/// Error (fraction misclassified) and mean loss of `net` on `data` in evaluation mode.
pub fn evaluate(net: &mut Network<f32>, data: &Dataset, loss: Loss) -> Result<(f64, f64)> {
    let (mut wrong, mut total_loss) = (0usize, 0.0);
    let (mut batch, mut hot, mut grad) = (Batch::default(), Matrix::zeros(0, 0), Matrix::zeros(0, 0));
    data.labels()?;
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(eval_batch(net)) {
        data.gather(chunk, &mut batch);
        net.forward(&batch.x, Mode::Eval)?;
        check_finite(net, chunk[0])?;
        let out = net.output();
        let labels = &batch.labels;
        wrong += (0..out.rows()).filter(|&i| argmax(out.row(i)) != labels[i]).count();
        total_loss += loss_on_labels(loss, net.output(), labels, &mut hot, &mut grad)? * chunk.len() as f64;
    }
    Ok((wrong as f64 / data.len() as f64, total_loss / data.len() as f64))
}

/// Class probabilities of one output row: softmax for logit losses' multi-class outputs, the
/// output itself (clipped at 0 and renormalised) for MSE, sigmoid per unit for BCE.
fn probabilities(loss: Loss, output: &[f32], probs: &mut [f32]) {
    match loss {
        Loss::SoftmaxCrossEntropy => softmax_row(output, probs),
        Loss::BinaryCrossEntropyWithLogits => probs.iter_mut().zip(output).for_each(|(p, &z)| *p = sigmoid(z)),
        Loss::MeanSquaredError | Loss::GaussianNll => {
            let sum: f32 = output.iter().map(|v| v.max(0.0)).sum();
            for (p, &v) in probs.iter_mut().zip(output) {
                *p = if sum > 0.0 { v.max(0.0) / sum } else { 1.0 / output.len() as f32 };
            }
        }
    }
}

/// The prediction of one example: from one `Eval` pass, or averaged over T Monte-Carlo samples.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Prediction {
    /// Mean class probabilities over the T samples.
    pub mean: Vec<f32>,
    /// Standard deviation of each class probability over the samples.
    pub std: Vec<f32>,
    /// argmax of `mean`.
    pub class: usize,
    /// H[mean] = −Σ_c mean_c ln mean_c (nats).
    pub entropy: f64,
    /// H[mean] − (1/T) Σ_t H[p_t]: the BALD score (nats).
    pub mutual_information: f64,
}

/// Predictions for every example of `x`: one `Eval` pass when `mc` is `None`, else `mc` Monte-Carlo
/// passes. MC masks are addressed by example index (rows `first_row + i`), so the result does not
/// depend on the batch size or thread count.
pub fn predict(net: &mut Network<f32>, x: &Matrix<f32>, loss: Loss, mc: Option<u32>) -> Result<Vec<Prediction>> {
    let samples = mc.unwrap_or(1).max(1);
    let (n, classes) = (x.rows(), net.outputs());
    let mut sum = vec![0.0f64; n * classes];
    let mut sum_sq = vec![0.0f64; n * classes];
    let mut sum_entropy = vec![0.0f64; n];
    for_each_pass(net, x, mc, |start, out| {
        let end = start + out.rows();
        // each example's sums in its own slots, examples in parallel
        let sums = sum[start * classes..end * classes].par_chunks_mut(classes);
        let squares = sum_sq[start * classes..end * classes].par_chunks_mut(classes);
        let entropies = sum_entropy[start..end].par_iter_mut();
        sums.zip(squares).zip(entropies).enumerate().with_min_len(64).for_each_init(
            || vec![0.0f32; classes],
            |probs, (r, ((sum, sum_sq), sum_entropy))| {
                probabilities(loss, out.row(r), probs);
                let mut h = 0.0;
                for ((s, sq), &p) in sum.iter_mut().zip(sum_sq.iter_mut()).zip(probs.iter()) {
                    *s += p as f64;
                    *sq += (p as f64) * (p as f64);
                    if p > 0.0 {
                        h -= p as f64 * (p as f64).ln();
                    }
                }
                *sum_entropy += h;
            },
        );
    })?;
    let t = samples as f64;
    Ok((0..n)
        .map(|i| {
            let mean: Vec<f32> = (0..classes).map(|c| (sum[i * classes + c] / t) as f32).collect();
            let std = (0..classes)
                .map(|c| {
                    let m = sum[i * classes + c] / t;
                    ((sum_sq[i * classes + c] / t - m * m).max(0.0)).sqrt() as f32
                })
                .collect();
            let entropy: f64 = mean.iter().filter(|&&p| p > 0.0).map(|&p| -(p as f64) * (p as f64).ln()).sum();
            Prediction {
                class: argmax(&mean),
                mutual_information: (entropy - sum_entropy[i] / t).max(0.0),
                entropy,
                std,
                mean,
            }
        })
        .collect())
}
