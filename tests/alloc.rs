//! A steady-state training step allocates nothing: a counting global allocator watches the steps
//! after the first few, run on a one-thread pool so that the pool's own bookkeeping is not seen.
//! The products' packing buffers are per-thread workspaces that grow during the first steps and
//! are reused after that (`dropnet::gemm`).

use dropnet::data::Dataset;
use dropnet::optim::{OptimConfig, Optimizer};
use dropnet::train::{train_step, StepBuffers};

use dropnet::{Activation, Architecture, Loss, Matrix, Network, Scaling};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if WATCHING.with(|w| w.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if WATCHING.with(|w| w.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by the steps after the first three of `batches` (on this thread).
fn steady_state_allocations(
    net: &mut Network<f32>,
    opt: &mut Optimizer,
    loss: Loss,
    data: &Dataset,
    batches: &[Vec<usize>],
) -> usize {
    let mut buffers = StepBuffers::default();
    for (step, batch) in batches.iter().enumerate() {
        WATCHING.with(|w| w.set(step >= 3));
        train_step(net, opt, loss, data, batch, step as u64, 0, &mut buffers).unwrap();
    }
    WATCHING.with(|w| w.set(false));
    ALLOCATIONS.swap(0, Ordering::Relaxed)
}

#[test]
fn a_steady_state_training_step_allocates_nothing() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        let arch = Architecture::mlp(
            &[100, 64, 48, 10],
            Activation::Relu,
            Activation::Identity,
            &[0.8, 0.5, 0.5],
            Scaling::Inverted,
        )
        .unwrap();
        let mut net = Network::<f32>::new(&arch, 3).unwrap();
        let mut opt = Optimizer::new(OptimConfig { max_norm: Some(3.0), ..OptimConfig::default() }).unwrap();
        let x = Matrix::from_fn(256, 100, |i, k| ((i * 3 + k) % 7) as f32 / 7.0);
        let data = Dataset::new(x, (0..256).map(|i| i % 10).collect(), std::path::Path::new("memory")).unwrap();
        let batches: Vec<Vec<usize>> = (0..8).map(|b| (b * 32..b * 32 + 32).collect()).collect();
        let in_steps = steady_state_allocations(&mut net, &mut opt, Loss::SoftmaxCrossEntropy, &data, &batches);
        assert_eq!(in_steps, 0, "5 steady-state steps allocated {in_steps} times");

        // The UCI protocol's regression step (13 features, 50 units, Adam with weight decay, mse
        // on one target, batches of 128 and a last one of 71) allocates nothing either.
        let arch =
            Architecture::mlp(&[13, 50, 1], Activation::Relu, Activation::Identity, &[0.95, 0.95], Scaling::Inverted)
                .unwrap();
        let mut net = Network::<f32>::new(&arch, 3).unwrap();
        let config = OptimConfig {
            method: dropnet::optim::Method::Adam,
            lr: 1e-3,
            weight_decay: 1e-4,
            ..OptimConfig::default()
        };
        let mut opt = Optimizer::new(config.clone()).unwrap();
        let x = Matrix::from_fn(455, 13, |i, k| ((i * 5 + k) % 11) as f32 / 11.0);
        let y = Matrix::from_fn(455, 1, |i, _| (i % 13) as f32 / 13.0);
        let data = Dataset::regression(x, y, std::path::Path::new("memory")).unwrap();
        // epochs of 455 examples: 128, 128, 128, 71, then the next epoch's 128s
        let epoch: Vec<Vec<usize>> = [0..128, 128..256, 256..384, 384..455].into_iter().map(|r| r.collect()).collect();
        let batches: Vec<Vec<usize>> = epoch.iter().chain(&epoch).cloned().collect();
        let in_steps = steady_state_allocations(&mut net, &mut opt, Loss::MeanSquaredError, &data, &batches);
        assert_eq!(in_steps, 0, "the regression steps allocated {in_steps} times");

        // Concrete dropout with its regulariser, per unit and per layer, allocates nothing either.
        let stack = dropnet::stack::Stack::parse("13,concrete0.9,dense50,relu,concrete0.8,dense1", Scaling::Inverted);
        let mut stack = stack.unwrap();
        if let Some(spec) = stack.noises_mut().nth(1) {
            spec.concrete = Some(dropnet::stack::ConcreteSpec { temperature: 0.1, per_layer: true });
        }
        let mut net = Network::<f32>::new(&dropnet::Architecture::new(stack), 3).unwrap();
        net.set_concrete_regularizer(dropnet::dropout::ConcreteRegularizer::new(1e-2, 455, 1.0));
        let mut opt = Optimizer::new(config.clone()).unwrap();
        let in_steps = steady_state_allocations(&mut net, &mut opt, Loss::MeanSquaredError, &data, &batches);
        assert_eq!(in_steps, 0, "the concrete dropout steps allocated {in_steps} times");
        // The counter does see an allocation made on this thread while watching.
        WATCHING.with(|w| w.set(true));
        let probe = std::hint::black_box(Vec::<u8>::with_capacity(16));
        WATCHING.with(|w| w.set(false));
        drop(probe);
        assert_eq!(ALLOCATIONS.swap(0, Ordering::Relaxed), 1);
    });
}
