//! The same seed gives the same masks whatever the number of threads.

use dropnet::dropout::{threshold, BitMask, MaskDraw};
use dropnet::rng::Stream;
use dropnet::{Activation, Architecture, Matrix, Mode, Network, Scaling};

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

#[test]
fn bulk_masks_are_identical_for_one_and_two_threads() {
    let draw = MaskDraw { seed: 7, stream: Stream::Mask, layer: 2, step: 11, first_row: 0 };
    let thresholds: Vec<u64> = (0..1000).map(|k| threshold(0.2 + 0.6 * (k % 7) as f64 / 6.0)).collect();
    let masks: Vec<BitMask> = [1, 2]
        .into_iter()
        .map(|threads| {
            pool(threads).install(|| {
                let mut mask = BitMask::default();
                mask.draw(512, 1000, &draw, &thresholds);
                mask
            })
        })
        .collect();
    assert_eq!(masks[0], masks[1]);
    // and the mask is not trivially constant
    assert!((0..1000).any(|k| masks[0].column_count(k) != 512 && masks[0].column_count(k) != 0));
}

#[test]
fn network_masks_are_identical_for_one_and_two_threads() {
    let arch = Architecture::mlp(
        &[300, 256, 256, 10],
        Activation::Relu,
        Activation::Identity,
        &[0.8, 0.5, 0.5],
        Scaling::Inverted,
    )
    .unwrap();
    let x = Matrix::from_fn(128, 300, |i, k| ((i * 7 + k * 3) % 11) as f32 / 11.0);
    let masks: Vec<Vec<BitMask>> = [1, 2]
        .into_iter()
        .map(|threads| {
            pool(threads).install(|| {
                let mut net = Network::<f32>::new(&arch, 123).unwrap();
                net.forward(&x, Mode::Train { step: 5 }).unwrap();
                net.noises().iter().map(|n| n.mask().expect("Bernoulli noise").clone()).collect()
            })
        })
        .collect();
    assert_eq!(masks[0], masks[1]);
}
