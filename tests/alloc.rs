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
        let mut buffers = StepBuffers::default();
        for (step, batch) in batches.iter().enumerate().take(3) {
            train_step(&mut net, &mut opt, Loss::SoftmaxCrossEntropy, &data, batch, step as u64, 0, &mut buffers)
                .unwrap();
        }
        WATCHING.with(|w| w.set(true));
        for (step, batch) in batches.iter().enumerate().skip(3) {
            train_step(&mut net, &mut opt, Loss::SoftmaxCrossEntropy, &data, batch, step as u64, 0, &mut buffers)
                .unwrap();
        }
        WATCHING.with(|w| w.set(false));
        let in_steps = ALLOCATIONS.swap(0, Ordering::Relaxed);
        assert_eq!(in_steps, 0, "5 steady-state steps allocated {in_steps} times");

        // The counter does see an allocation made on this thread while watching.
        WATCHING.with(|w| w.set(true));
        let probe = std::hint::black_box(Vec::<u8>::with_capacity(16));
        WATCHING.with(|w| w.set(false));
        drop(probe);
        assert_eq!(ALLOCATIONS.swap(0, Ordering::Relaxed), 1);
    });
}
