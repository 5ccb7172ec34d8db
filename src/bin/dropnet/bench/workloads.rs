//! The benchmark workloads of the project's benchmark specification (SPEC.md), exactly as it states them:
//!
//! - **W1**: one training epoch of the 784-1024-1024-10 ReLU network with inverted dropout (keep 0.8
//!   on the input, 0.5 on hidden units), softmax cross-entropy, SGD momentum 0.9, lr 0.01, batch 128,
//!   on the real MNIST training set, timed after 20 warm-up steps; then the test error in eval mode.
//!   Its limit is the time of the step's 8 matrix products alone (3 forward, 3 weight gradients,
//!   2 input gradients) at the same shapes, orientations and thread count, in the same run.
//! - **W2**: dropout forward (`y = x·r/keep`, bits kept) and backward (`dx = dy·r/keep`) over 2^25
//!   floats at keep 0.5, in GB/s counting 8 bytes per element, against a plain copy of the buffer.
//! - **W3**: f32 GEMM throughput at 1024×1024×1024 and at each of W1's product shapes.
//! - **W4**: one training epoch of SPEC's dropout CNN ([`W4_ARCH`]) as W1's protocol trains it,
//!   with its GFLOP/s and a limit from the same run's 1024³ product rate.
//! - **W5**: Monte-Carlo dropout prediction, T = 50 samples of W1's network (weights of a fixed
//!   seed) for each of the 10,000 MNIST test images, through the library's `eval::predict` (what
//!   `dropnet predict --mc 50` runs), timed after one warm-up batch; limit from the 1024³ rate.

use dropnet::activation::Activation;
use dropnet::data::{self, Dataset, Source};
use dropnet::dropout::Scaling;
use dropnet::error::{Error, Result};
use dropnet::eval::{eval_batch, evaluate, predict};
use dropnet::layer::{Mode, Noise};
use dropnet::loss::Loss;
use dropnet::network::{Architecture, Network};
use dropnet::optim::{OptimConfig, Optimizer};
use dropnet::stack::{NoiseKind, NoiseSpec, Shape, Stack};
use dropnet::tensor::{matmul, Matrix, Trans};
use dropnet::train::{train_step, StepBuffers};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const W1_SIZES: [usize; 4] = [784, 1024, 1024, 10];
const W1_BATCH: usize = 128;
const W1_WARMUP_STEPS: usize = 20;
const W1_SEED: u64 = 1;

#[derive(Clone, Debug, Serialize)]
pub struct W1Result {
    pub workload: &'static str,
    pub threads: usize,
    pub data: String,
    pub samples_per_s: f64,
    pub epoch_s: f64,
    pub test_error: f64,
    pub limit_samples_per_s: f64,
    pub fraction_of_limit: f64,
    pub mask_bytes_per_step: usize,
    /// Present when the run timed only this many steps of the epoch (`dropnet bench --steps N`):
    /// such a run checks the workload, it is not SPEC.md's figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// The timed epoch's step times: not in SPEC.md, which reports the epoch as one wall time, but
    /// what shows whether a shared machine slowed some of the run down (the median step is then
    /// well below `epoch_s / 469`, and the slowest tenth far above it).
    pub step_ms: StepTimes,
}

/// Milliseconds per training step over the timed epoch.
#[derive(Clone, Debug, Serialize)]
pub struct StepTimes {
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

impl StepTimes {
    fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms.get(((ms.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(0.0);
        Self { min: at(0.0), median: at(0.5), p90: at(0.9), max: at(1.0) }
    }
}

/// Examples per digit in MNIST's training set (its published label counts): W1 refuses any other
/// data set, Fashion-MNIST included (6000 per class).
const MNIST_TRAIN_LABEL_COUNTS: [usize; 10] = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];

/// Steps in the timed epoch of W1 and W4: ⌈60000 / 128⌉.
pub const EPOCH_STEPS: usize = 469;

/// The real MNIST training and test sets of `dir`, refused when they are not MNIST.
fn mnist(dir: &Path, workload: &str) -> Result<(Dataset, Dataset)> {
    let splits =
        data::load(&Source::Idx(dir.to_path_buf()), data::LoadOptions { seed: W1_SEED, ..Default::default() })?;
    let mut counts = [0usize; 10];
    splits.train.labels()?.iter().for_each(|&y| counts[y.min(9)] += 1);
    if counts != MNIST_TRAIN_LABEL_COUNTS || splits.train.features() != 784 {
        return Err(Error::File {
            path: dir.to_path_buf(),
            message: format!(
                "{workload} runs on MNIST only, and this is not MNIST's training set (label counts differ)"
            ),
        });
    }
    let test = splits.test.ok_or_else(|| Error::File {
        path: dir.to_path_buf(),
        message: format!("{workload} needs the MNIST test set (t10k files) for its sanity check"),
    })?;
    Ok((splits.train, test))
}

/// One training epoch of SPEC's protocol (SGD, momentum 0.9, lr 0.01, batch 128, 20 warm-up steps
/// of a shuffled order, then a fresh shuffle timed; `steps` times only that many of its steps),
/// then the test error in evaluation mode.
struct Epoch {
    samples_per_s: f64,
    epoch_s: f64,
    test_error: f64,
    step_ms: StepTimes,
}

fn timed_epoch(net: &mut Network<f32>, train: &Dataset, test: &Dataset, steps: Option<usize>) -> Result<Epoch> {
    if let Some(n) = steps {
        if n == 0 || n > EPOCH_STEPS {
            return Err(Error::Config(format!("--steps {n}: the epoch has 1 to {EPOCH_STEPS} steps")));
        }
    }
    let config = OptimConfig { lr: 0.01, momentum: 0.9, ..OptimConfig::default() };
    let mut opt = Optimizer::new(config)?;
    let loss = Loss::SoftmaxCrossEntropy;
    let mut buffers = StepBuffers::default();
    let mut step = 0u64;
    // Warm-up: the first 20 batches of a shuffled order, not timed.
    let warmup = data::epoch_order(train.len(), W1_SEED, 0);
    for chunk in warmup.chunks(W1_BATCH).take(W1_WARMUP_STEPS) {
        train_step(net, &mut opt, loss, train, chunk, step, 0, &mut buffers)?;
        step += 1;
    }
    // The timed epoch: all 469 batches of a fresh shuffle (or the first `steps`).
    let order = data::epoch_order(train.len(), W1_SEED, 1);
    let mut step_ms = Vec::with_capacity(order.len().div_ceil(W1_BATCH));
    let mut samples = 0;
    let started = Instant::now();
    for chunk in order.chunks(W1_BATCH).take(steps.unwrap_or(EPOCH_STEPS)) {
        samples += chunk.len();
        let step_started = Instant::now();
        train_step(net, &mut opt, loss, train, chunk, step, 1, &mut buffers)?;
        step_ms.push(step_started.elapsed().as_secs_f64() * 1e3);
        step += 1;
    }
    let epoch_s = started.elapsed().as_secs_f64();
    let (test_error, _) = evaluate(net, test, loss)?;
    Ok(Epoch { samples_per_s: samples as f64 / epoch_s, epoch_s, test_error, step_ms: StepTimes::of(step_ms) })
}

/// W1 on the MNIST folder `dir` (train and t10k files); with `steps`, only the first that many
/// steps of the timed epoch (1..=469).
pub fn w1(dir: &Path, steps: Option<usize>) -> Result<W1Result> {
    let (train, test) = mnist(dir, "W1")?;
    let arch =
        Architecture::mlp(&W1_SIZES, Activation::Relu, Activation::Identity, &[0.8, 0.5, 0.5], Scaling::Inverted)?;
    let mut net = Network::<f32>::new(&arch, W1_SEED)?;
    let e = timed_epoch(&mut net, &train, &test, steps)?;
    // Bits kept for backward in a full batch: 128 rows of ⌈n/64⌉ 64-bit words per dropped layer.
    let mask_bytes_per_step = W1_SIZES[..3].iter().map(|&n| W1_BATCH * n.div_ceil(64) * 8).sum::<usize>();
    let limit_samples_per_s = W1_BATCH as f64 / w1_products_seconds()?;
    Ok(W1Result {
        workload: "w1",
        threads: rayon::current_num_threads(),
        data: dir.display().to_string(),
        samples_per_s: e.samples_per_s,
        epoch_s: e.epoch_s,
        test_error: e.test_error,
        limit_samples_per_s,
        fraction_of_limit: e.samples_per_s / limit_samples_per_s,
        mask_bytes_per_step,
        steps,
        step_ms: e.step_ms,
    })
}

/// W4's network (SPEC.md): two convolutions with ReLU and max-pooling, dropout before both dense
/// layers.
pub const W4_ARCH: &str =
    "1x28x28,conv32k5p2,relu,maxpool2,conv64k5p2,relu,maxpool2,flatten,keep0.5,dense1024,relu,keep0.5,dense10";

/// FLOP of one W4 sample counting products only (SPEC.md).
pub const W4_FLOP_PER_SAMPLE: u64 = 82_049_024;

#[derive(Clone, Debug, Serialize)]
pub struct W4Result {
    pub workload: &'static str,
    pub threads: usize,
    pub data: String,
    pub samples_per_s: f64,
    /// samples/s × FLOP per sample / 1e9.
    pub gflops: f64,
    pub epoch_s: f64,
    pub test_error: f64,
    /// This run's W3 1024³ GFLOP/s × 1e9 / FLOP per sample.
    pub limit_samples_per_s: f64,
    pub fraction_of_limit: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    pub step_ms: StepTimes,
}

/// W4 on the MNIST folder `dir`; with `steps`, only the first that many steps of the timed epoch.
pub fn w4(dir: &Path, steps: Option<usize>) -> Result<W4Result> {
    let (train, test) = mnist(dir, "W4")?;
    let mut net = Network::<f32>::new(&Architecture::new(Stack::parse(W4_ARCH, Scaling::Inverted)?), W1_SEED)?;
    let e = timed_epoch(&mut net, &train, &test, steps)?;
    let limit_samples_per_s = gemm_1024_gflops()? * 1e9 / W4_FLOP_PER_SAMPLE as f64;
    Ok(W4Result {
        workload: "w4",
        threads: rayon::current_num_threads(),
        data: dir.display().to_string(),
        samples_per_s: e.samples_per_s,
        gflops: e.samples_per_s * W4_FLOP_PER_SAMPLE as f64 / 1e9,
        epoch_s: e.epoch_s,
        test_error: e.test_error,
        limit_samples_per_s,
        fraction_of_limit: e.samples_per_s / limit_samples_per_s,
        steps,
        step_ms: e.step_ms,
    })
}

/// Monte-Carlo samples per example in W5.
pub const W5_SAMPLES: u32 = 50;

/// FLOP of one W5 example counting products only (SPEC.md): 50 · 2·(784·1024 + 1024·1024 + 1024·10).
pub const W5_FLOP_PER_EXAMPLE: u64 = 186_163_200;

#[derive(Clone, Debug, Serialize)]
pub struct W5Result {
    pub workload: &'static str,
    pub threads: usize,
    pub data: String,
    pub mc_samples: u32,
    pub examples: usize,
    /// Test examples ÷ the wall time of the whole pass.
    pub examples_per_s: f64,
    pub wall_s: f64,
    /// This run's W3 1024³ GFLOP/s × 1e9 / FLOP per example.
    pub limit_examples_per_s: f64,
    pub fraction_of_limit: f64,
}

/// W5 on the MNIST folder `dir`: every test image's mean class probabilities over 50 dropout
/// samples, each sample with its own masks on every dropped layer.
pub fn w5(dir: &Path) -> Result<W5Result> {
    let (_, test) = mnist(dir, "W5")?;
    let arch =
        Architecture::mlp(&W1_SIZES, Activation::Relu, Activation::Identity, &[0.8, 0.5, 0.5], Scaling::Inverted)?;
    let mut net = Network::<f32>::new(&arch, W1_SEED)?;
    let loss = Loss::SoftmaxCrossEntropy;
    // Warm-up: the first batch of the pass, not timed.
    let first = eval_batch(&net).min(test.len());
    let warmup = test.subset(&(0..first).collect::<Vec<_>>());
    predict(&mut net, &warmup.x, loss, Some(W5_SAMPLES))?;
    let started = Instant::now();
    let predictions = predict(&mut net, &test.x, loss, Some(W5_SAMPLES))?;
    let wall_s = started.elapsed().as_secs_f64();
    let examples_per_s = predictions.len() as f64 / wall_s;
    let limit_examples_per_s = gemm_1024_gflops()? * 1e9 / W5_FLOP_PER_EXAMPLE as f64;
    Ok(W5Result {
        workload: "w5",
        threads: rayon::current_num_threads(),
        data: dir.display().to_string(),
        mc_samples: W5_SAMPLES,
        examples: predictions.len(),
        examples_per_s,
        wall_s,
        limit_examples_per_s,
        fraction_of_limit: examples_per_s / limit_examples_per_s,
    })
}

/// GFLOP/s of a plain 1024³ product at this thread count (as W3 measures it).
fn gemm_1024_gflops() -> Result<f64> {
    let n = 1024;
    let mut p = Product { c: Matrix::zeros(n, n), a: filled(n, n), ta: Trans::No, b: filled(n, n), tb: Trans::No };
    let seconds = median_seconds(3, 10, || p.run())?;
    Ok(p.flop() / seconds / 1e9)
}

/// One matrix product of W1's step: `c = op(a)·op(b)` at the orientation the dense layer uses.
struct Product {
    c: Matrix<f32>,
    a: Matrix<f32>,
    ta: Trans,
    b: Matrix<f32>,
    tb: Trans,
}

impl Product {
    fn run(&mut self) -> Result<()> {
        matmul(&mut self.c, &self.a, self.ta, &self.b, self.tb, false)
    }

    /// 2·m·n·k
    fn flop(&self) -> f64 {
        let k = if self.ta == Trans::No { self.a.cols() } else { self.a.rows() };
        2.0 * (self.c.rows() * self.c.cols() * k) as f64
    }
}

fn filled(rows: usize, cols: usize) -> Matrix<f32> {
    Matrix::from_fn(rows, cols, |i, k| ((i * 7 + k * 13) % 17) as f32 / 17.0 - 0.5)
}

/// The 8 products of a W1 step, with the shapes and orientations of `layer::dense`:
/// forward `z = ã·Wᵀ`, weight gradient `dW = dzᵀ·ã`, input gradient `dã = dz·W` (layers 2 and 3).
fn w1_products() -> Vec<Product> {
    let m = W1_BATCH;
    let mut products = Vec::new();
    for l in 0..3 {
        let (n_in, n_out) = (W1_SIZES[l], W1_SIZES[l + 1]);
        let p = |c, a, ta, b, tb| Product { c, a, ta, b, tb };
        // forward z = ã·Wᵀ
        products.push(p(Matrix::zeros(m, n_out), filled(m, n_in), Trans::No, filled(n_out, n_in), Trans::Yes));
        // weight gradient dW = dzᵀ·ã
        products.push(p(Matrix::zeros(n_out, n_in), filled(m, n_out), Trans::Yes, filled(m, n_in), Trans::No));
        // input gradient dã = dz·W (not needed for the first layer)
        if l > 0 {
            products.push(p(Matrix::zeros(m, n_in), filled(m, n_out), Trans::No, filled(n_out, n_in), Trans::No));
        }
    }
    products
}

/// Median seconds of `f` over `repeats` runs after `warmup` runs.
fn median_seconds(warmup: usize, repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[repeats / 2])
}

/// Seconds for the 8 products of one W1 step, back to back (median of 50).
fn w1_products_seconds() -> Result<f64> {
    let mut products = w1_products();
    median_seconds(5, 50, || products.iter_mut().try_for_each(Product::run))
}

#[derive(Clone, Debug, Serialize)]
pub struct W2Result {
    pub workload: &'static str,
    /// bernoulli, gaussian or alpha.
    pub variant: &'static str,
    pub threads: usize,
    pub elements: usize,
    pub fwd_gbps: f64,
    pub bwd_gbps: f64,
    pub copy_gbps: f64,
    /// fwd_gbps and bwd_gbps as fractions of copy_gbps.
    pub fwd_of_copy: f64,
    pub bwd_of_copy: f64,
    /// What the forward pass keeps for backward: the bit mask, or Gaussian's f32 factors.
    pub mask_bytes: usize,
}

/// W2: the noise `variant` forward and backward over 2^25 floats (as a 32768 × 1024 batch) at
/// keep 0.5, through the same noise layer a network uses.
pub fn w2(variant: NoiseKind) -> Result<W2Result> {
    const ROWS: usize = 1 << 15;
    const COLS: usize = 1 << 10;
    let n = ROWS * COLS;
    let x = Matrix::<f32>::from_fn(ROWS, COLS, |i, k| (i ^ k) as f32 * 1e-3);
    let mut y = Matrix::zeros(ROWS, COLS);
    let mut dx = Matrix::zeros(ROWS, COLS);
    let spec = NoiseSpec::new(variant, vec![0.5], Scaling::Inverted);
    let mut noise = Noise::<f32>::new(&spec, Shape::Flat(COLS), 0)?;
    let mut step = 0u32;
    let fwd = median_seconds(3, 10, || {
        step += 1;
        noise.forward(&x, &mut y, Mode::Train { step }, 1)
    })?;
    let bwd = median_seconds(3, 10, || {
        noise.backward(&y, &mut dx);
        Ok(())
    })?;
    let mut copy_dst = vec![0.0f32; n];
    let copy = median_seconds(3, 10, || {
        copy_dst.par_chunks_mut(1 << 16).zip(x.as_slice().par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s));
        Ok(())
    })?;
    let gbps = |seconds: f64| 8.0 * n as f64 / seconds / 1e9;
    Ok(W2Result {
        workload: "w2",
        variant: variant.token_name(),
        threads: rayon::current_num_threads(),
        elements: n,
        fwd_gbps: gbps(fwd),
        bwd_gbps: gbps(bwd),
        copy_gbps: gbps(copy),
        fwd_of_copy: copy / fwd,
        bwd_of_copy: copy / bwd,
        mask_bytes: noise.mask().map_or(n * 4, |m| m.bytes()),
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct W3Result {
    pub workload: &'static str,
    pub threads: usize,
    /// GFLOP/s keyed by shape "MxKxN" (C[M,N] = A[M,K]·B[K,N], both operands row-major).
    pub gflops: BTreeMap<String, f64>,
}

/// W3: plain `C = A·B` GEMM throughput at 1024³ and at each distinct shape of W1's products.
pub fn w3() -> Result<W3Result> {
    let mut shapes: Vec<(usize, usize, usize)> = vec![(1024, 1024, 1024)];
    for p in w1_products() {
        let k = if p.ta == Trans::No { p.a.cols() } else { p.a.rows() };
        let shape = (p.c.rows(), k, p.c.cols());
        if !shapes.contains(&shape) {
            shapes.push(shape);
        }
    }
    let mut gflops = BTreeMap::new();
    for (m, k, n) in shapes {
        let mut p = Product { c: Matrix::zeros(m, n), a: filled(m, k), ta: Trans::No, b: filled(k, n), tb: Trans::No };
        let seconds = median_seconds(3, if m * n * k > 1 << 27 { 10 } else { 30 }, || p.run())?;
        gflops.insert(format!("{m}x{k}x{n}"), p.flop() / seconds / 1e9);
    }
    Ok(W3Result { workload: "w3", threads: rayon::current_num_threads(), gflops })
}
