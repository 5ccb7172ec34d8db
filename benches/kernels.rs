//! Criterion benches of the kernels tuned for speed, at W1's sizes (batch 128, 1024 units) and W4's:
//! `cargo bench --bench kernels`. The SPEC workloads themselves are `dropnet bench`.

use criterion::{criterion_group, criterion_main, Criterion};
use dropnet::dropout::{Dropout, Keep, MaskDraw, Scaling};
use dropnet::layer::{Conv2d, Geometry, Pool, PoolKind};
use dropnet::optim::{update_rows, OptimConfig, Slots};
use dropnet::rng::Stream;
use dropnet::stack::Shape;
use dropnet::{matmul, Activation, Matrix, Mode, Trans};
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

fn w4_layers(c: &mut Criterion) {
    // W4's second convolution (32 → 64 channels, 5x5, padding 2, on 14x14 maps, batch 128) and
    // the max-pooling after its first (2x2 on 28x28x32)
    let input = Shape::Map { c: 32, h: 14, w: 14 };
    let g = Geometry::new(input, 64, 5, 1, 2).unwrap();
    let mut conv = Conv2d::new(filled(64, g.patch()), vec![0.0; 64], Activation::Relu, None, g).unwrap();
    let x = filled(128, input.units());
    c.bench_function("conv forward 128x14x14x32 -> 64, 5x5", |b| {
        b.iter(|| conv.forward(black_box(&x), Mode::Train { step: 1 }, 1).unwrap())
    });
    conv.forward(&x, Mode::Train { step: 1 }, 1).unwrap();
    let (da, mut dx) = (filled(128, g.output().units()), Matrix::zeros(128, input.units()));
    c.bench_function("conv backward (dW, db, dx) 128x14x14x32 -> 64, 5x5", |b| {
        b.iter(|| conv.backward(black_box(&da), Some(&mut dx)).unwrap())
    });
    c.bench_function("conv backward (dW, db) 128x14x14x32 -> 64, 5x5", |b| {
        b.iter(|| conv.backward(black_box(&da), None).unwrap())
    });
    // the first convolution (1 → 32 channels, 5x5, padding 2, on the 28x28 images): the input
    // has no gradient, so its backward is dW and db only
    let image = Shape::Map { c: 1, h: 28, w: 28 };
    let g1 = Geometry::new(image, 32, 5, 1, 2).unwrap();
    let mut conv1 = Conv2d::new(filled(32, g1.patch()), vec![0.0; 32], Activation::Relu, None, g1).unwrap();
    let x1 = filled(128, image.units());
    conv1.forward(&x1, Mode::Train { step: 1 }, 1).unwrap();
    let da1 = filled(128, g1.output().units());
    c.bench_function("conv1 backward (dW, db) 128x28x28x1 -> 32, 5x5", |b| {
        b.iter(|| conv1.backward(black_box(&da1), None).unwrap())
    });
    let map = Shape::Map { c: 32, h: 28, w: 28 };
    let mut pool = Pool::<f32>::new(PoolKind::Max, 2, 2, map).unwrap();
    let x = filled(128, map.units());
    c.bench_function("maxpool forward 2x2, 128x28x28x32", |b| b.iter(|| pool.forward(black_box(&x)).unwrap()));
    pool.forward(&x).unwrap();
    let (dy, mut dx) = (filled(128, pool.output_shape.units()), Matrix::zeros(128, map.units()));
    c.bench_function("maxpool backward 2x2, 128x28x28x32", |b| {
        b.iter(|| pool.backward(black_box(&dy), &mut dx).unwrap())
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

criterion_group!(benches, dropout, activations, products, w4_layers, optimizer);
criterion_main!(benches);
