//! Criterion benches of the kernels tuned for speed, at W1's sizes (batch 128, 1024 units):
//! `cargo bench --bench kernels`. The SPEC workloads themselves are `dropnet bench`.

use criterion::{criterion_group, criterion_main, Criterion};
use dropnet::dropout::{Dropout, Keep, MaskDraw, Scaling};
use dropnet::optim::{update_rows, OptimConfig, Slots};
use dropnet::rng::Stream;
use dropnet::{matmul, Activation, Matrix, Trans};
use std::hint::black_box;

fn filled(rows: usize, cols: usize) -> Matrix<f32> {
    Matrix::from_fn(rows, cols, |i, k| ((i * 7 + k * 13) % 17) as f32 / 17.0 - 0.5)
}

fn dropout(c: &mut Criterion) {
    let x = filled(128, 1024);
    let mut y = Matrix::zeros(128, 1024);
    let mut dropout = Dropout::<f32>::new(Keep::uniform(0.5, 1024).unwrap(), Scaling::Inverted);
    let mut step = 0;
    c.bench_function("dropout forward 128x1024 (draw + apply)", |b| {
        b.iter(|| {
            step += 1;
            let draw = MaskDraw { seed: 1, stream: Stream::Mask, layer: 1, step, first_row: 0 };
            dropout.forward(black_box(&x), &mut y, Some(&draw)).unwrap();
        })
    });
    let mut dx = Matrix::zeros(128, 1024);
    c.bench_function("dropout backward 128x1024", |b| b.iter(|| dropout.backward(black_box(&y), &mut dx)));
}

fn activations(c: &mut Criterion) {
    // ReLU on a hidden layer's z, forward and backward (dz = da · g'(z)), each a parallel pass
    let (z, da) = (filled(128, 1024), filled(128, 1024));
    let (mut a, mut dz) = (Matrix::zeros(128, 1024), Matrix::zeros(128, 1024));
    c.bench_function("relu forward 128x1024", |b| b.iter(|| Activation::Relu.forward(black_box(&z), &mut a)));
    c.bench_function("relu backward 128x1024", |b| {
        b.iter(|| Activation::Relu.backward(black_box(&z), &a, &da, &mut dz))
    });
}

fn products(c: &mut Criterion) {
    // the three products of W1's 1024 -> 1024 layer, as layer::dense computes them
    let (a, w, dz) = (filled(128, 1024), filled(1024, 1024), filled(128, 1024));
    let (mut z, mut dw, mut da) = (Matrix::zeros(128, 1024), Matrix::zeros(1024, 1024), Matrix::zeros(128, 1024));
    c.bench_function("forward z = a·Wᵀ 128x1024x1024", |b| {
        b.iter(|| matmul(&mut z, black_box(&a), Trans::No, &w, Trans::Yes, false).unwrap())
    });
    // the same product with the weight stored transposed, [in, out]: shows what W's layout costs
    let w_t = filled(1024, 1024);
    c.bench_function("forward z = a·Wt, W stored [in, out], 128x1024x1024", |b| {
        b.iter(|| matmul(&mut z, black_box(&a), Trans::No, &w_t, Trans::No, false).unwrap())
    });
    // the transposed orientation zᵀ = W·aᵀ (layer::dense used it while products went through the
    // gemm crate, which ran it twice as fast as a·Wᵀ)
    let mut z_t = Matrix::zeros(1024, 128);
    c.bench_function("forward zt = W·aᵀ 1024x1024x128", |b| {
        b.iter(|| matmul(&mut z_t, &w, Trans::No, black_box(&a), Trans::Yes, false).unwrap())
    });
    c.bench_function("weight grad dW = dzᵀ·a 1024x128x1024", |b| {
        b.iter(|| matmul(&mut dw, black_box(&dz), Trans::Yes, &a, Trans::No, false).unwrap())
    });
    c.bench_function("input grad da = dz·W 128x1024x1024", |b| {
        b.iter(|| matmul(&mut da, black_box(&dz), Trans::No, &w, Trans::No, false).unwrap())
    });
}

fn optimizer(c: &mut Criterion) {
    let mut w = vec![0.1f32; 1024 * 1024];
    let g = vec![0.01f32; 1024 * 1024];
    let mut slots = Slots::default();
    let p = OptimConfig::default().step_params(0, 1); // sgd, lr 0.01, momentum 0.9
    c.bench_function("sgd momentum + max-norm, 1024x1024 weights", |b| {
        b.iter(|| update_rows(black_box(&mut w), &g, &mut slots, &p, true, 1024, Some(3.5)))
    });
}

criterion_group!(benches, dropout, activations, products, optimizer);
criterion_main!(benches);
