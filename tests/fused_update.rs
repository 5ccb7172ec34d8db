//! Training updates each weight matrix inside the product that computes its gradient
//! (`Network::backward_and_update`); that must be the same update, bit for bit, as computing every
//! gradient first and then stepping the optimizer (`Network::backward` + `Network::apply_update`).

use dropnet::loss::Loss;
use dropnet::optim::{Method, OptimConfig, Optimizer};
use dropnet::{Activation, Architecture, Matrix, Mode, Network, Scaling};

/// The weights and biases of every layer, as bits.
fn bits(net: &Network<f32>) -> Vec<u32> {
    net.params().iter().flat_map(|p| p.value.iter().map(|v| v.to_bits())).collect()
}

/// 200 -> 1100 -> 40 -> 10 at batch 128: the weight-gradient products are large enough (over 4M
/// multiply-adds) to be split between the two threads, by rows for the first layer's weight
/// gradient (whole rows per block: max-norm inside the product) and by columns for the second's
/// (max-norm after it).
fn network() -> Network<f32> {
    let arch = Architecture::mlp(
        &[200, 1100, 40, 10],
        Activation::Relu,
        Activation::Identity,
        &[0.8, 0.5, 0.5],
        Scaling::Inverted,
    )
    .unwrap();
    Network::<f32>::new(&arch, 5).unwrap()
}

/// The same shapes with DropConnect on the first two weight matrices: the gradient is masked
/// inside the product, before the update.
fn dropconnect_network() -> Network<f32> {
    let tokens = "200,dropconnect0.8,dense1100,relu,dropconnect0.5,dense40,relu,keep0.5,dense10";
    let stack = dropnet::stack::Stack::parse(tokens, Scaling::Inverted).unwrap();
    Network::<f32>::new(&Architecture::new(stack), 5).unwrap()
}

fn train_three_steps(method: Method, fused: bool) -> (Vec<u32>, Vec<u32>) {
    train_three_steps_of(network(), method, fused)
}

fn train_three_steps_of(mut net: Network<f32>, method: Method, fused: bool) -> (Vec<u32>, Vec<u32>) {
    let config = OptimConfig { method, lr: 0.05, weight_decay: 1e-3, max_norm: Some(0.9), ..OptimConfig::default() };
    let mut opt = Optimizer::new(config).unwrap();
    let x = Matrix::from_fn(128, 200, |i, k| ((i * 7 + k * 3) % 11) as f32 / 11.0);
    let labels: Vec<usize> = (0..128).map(|i| i % 10).collect();
    let (mut one_hot, mut grad) = (Matrix::zeros(0, 0), Matrix::zeros(0, 0));
    for step in 0..3 {
        net.forward(&x, Mode::Train { step }).unwrap();
        dropnet::eval::loss_on_labels(Loss::SoftmaxCrossEntropy, net.output(), &labels, &mut one_hot, &mut grad)
            .unwrap();
        if fused {
            net.backward_and_update(&grad, &mut opt, 0).unwrap();
        } else {
            net.backward(&grad, None).unwrap();
            net.apply_update(&mut opt, 0);
        }
    }
    let slots = opt.slots.iter().flat_map(|s| s.first.iter().chain(&s.second).map(|v| v.to_bits())).collect();
    (bits(&net), slots)
}

#[test]
fn the_fused_update_equals_backward_then_step_bit_for_bit() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    pool.install(|| {
        let initial = bits(&network());
        for method in [Method::Sgd, Method::Nesterov, Method::Adam, Method::Rmsprop] {
            let (separate, separate_slots) = train_three_steps(method, false);
            let (fused, fused_slots) = train_three_steps(method, true);
            assert_ne!(separate, initial, "{method:?}: the weights moved");
            assert_eq!(separate.len(), fused.len());
            let differing = separate.iter().zip(&fused).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{method:?}: {differing} weights differ");
            assert!(separate_slots == fused_slots, "{method:?}: optimizer state differs");
        }
        for method in [Method::Sgd, Method::Adam] {
            let separate = train_three_steps_of(dropconnect_network(), method, false);
            let fused = train_three_steps_of(dropconnect_network(), method, true);
            assert_ne!(separate.0, bits(&dropconnect_network()), "{method:?}: the weights moved");
            assert!(separate == fused, "{method:?}: DropConnect's fused update differs");
        }
    });
}
