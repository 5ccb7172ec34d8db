//! A network: the layers of a stack in sequence, the seed that addresses their noise and initial
//! weights, parameter visiting, the fused training step, and a printable summary.

use crate::activation::Activation;
use crate::dropout::{ConcreteRegularizer, KeepSummary};
use crate::error::{shape, Error, Result};
use crate::layer::{plan, ActivationLayer, Conv2d, Dense, Layer, Noise, NoiseLayer, Plan, PlanKind, Pool};
use crate::optim::{max_norm, update, update_rows, BlockUpdate, Optimizer};
use crate::rng::{Stream, StreamRng};
use crate::stack::{Shape, Stack, Token};
use crate::tensor::{Matrix, Scalar};
use crate::Scaling;
use std::fmt;
use std::ops::Range;

pub use crate::layer::Mode;

pub use crate::init::Init;

/// Everything that defines a network's shape and starting point: its stack and its initialisation.
#[derive(Clone, Debug)]
pub struct Architecture {
    pub stack: Stack,
    pub init: Init,
}

impl Architecture {
    /// A stack with the initialisation of its first activation.
    pub fn new(stack: Stack) -> Self {
        let init = Init::for_stack(&stack);
        Self { stack, init }
    }

    /// A multilayer perceptron: `hidden` on every hidden layer, `output` on the last, and one keep
    /// probability per dense layer's input (`keep[0]` drops the network's input).
    pub fn mlp(
        sizes: &[usize],
        hidden: Activation,
        output: Activation,
        keep: &[f64],
        scaling: Scaling,
    ) -> Result<Self> {
        let layers = sizes.len().saturating_sub(1);
        if layers == 0 || sizes.contains(&0) {
            return Err(Error::Config(format!(
                "an architecture needs at least two non-zero layer sizes, got {sizes:?}"
            )));
        }
        if keep.len() != layers {
            return Err(Error::Config(format!("{} keep values for {layers} dense layers", keep.len())));
        }
        for (l, &p) in keep.iter().enumerate() {
            crate::dropout::Keep::of_layer(vec![p], l)?;
        }
        let keep: Vec<Vec<f64>> = keep.iter().map(|&p| vec![p]).collect();
        let stack = Stack::mlp(sizes, hidden, output, &keep, scaling)?;
        Ok(Self { stack, init: Init::for_activation(hidden) })
    }
}

/// One parameter tensor and its gradient, as the optimizer and the gradient check see it.
pub struct Param<'a, T: Scalar> {
    /// `N.weight` or `N.bias`, N the module number of the layer's token (as `nn.Sequential`).
    pub name: String,
    /// The stored layout: [out, in] for dense weights, [out, K·K·in] for convolution weights,
    /// [out, 1] for biases.
    pub shape: (usize, usize),
    pub value: &'a [T],
    pub grad: &'a [T],
}

/// The layers of a stack in sequence, with the seed that addresses their noise.
#[derive(Clone, Debug)]
pub struct Network<T: Scalar> {
    stack: Stack,
    plans: Vec<Plan>,
    layers: Vec<Layer<T>>,
    /// Per layer, the index of its first parameter tensor (its weight), if it has parameters.
    first_param: Vec<Option<usize>>,
    seed: u64,
    /// ∂J/∂a between two layers during backward: two buffers used in turn, reused across steps.
    grad_between: [Matrix<T>; 2],
}

impl<T: Scalar> Network<T> {
    /// A freshly initialised network: the weights of parameter layer l (counting dense layers and
    /// convolutions from 0) are normal draws of stream (seed, Init, l, 0) in their stored order,
    /// biases zero. The stack is checked against the limits before anything is allocated.
    pub fn new(arch: &Architecture, seed: u64) -> Result<Self> {
        let plans = plan(&arch.stack)?;
        let mut layers = Vec::with_capacity(plans.len());
        let mut param_layer = 0u32;
        for p in &plans {
            let noise = p.noise.as_ref().map(|(spec, ordinal, on)| Noise::new(spec, *on, *ordinal)).transpose()?;
            let mut weights = |rows: usize, cols: usize, fan_in: usize, fan_out: usize| -> Result<Matrix<T>> {
                let mut rng = StreamRng::new(seed, Stream::Init, param_layer, 0);
                param_layer += 1;
                let mut weight = Matrix::try_zeros(rows, cols)?;
                weight
                    .as_mut_slice()
                    .iter_mut()
                    .for_each(|w| *w = T::from_f64(arch.init.draw(fan_in, fan_out, &mut rng)));
                Ok(weight)
            };
            layers.push(match &p.kind {
                PlanKind::Dense { units, .. } => {
                    let inputs = p.input.units();
                    let weight = weights(*units, inputs, inputs, *units)?;
                    Layer::Dense(Dense::new(weight, vec![T::ZERO; *units], p.activation, noise)?)
                }
                PlanKind::Conv(g) => {
                    let weight = weights(g.cout, g.patch(), g.patch(), g.cout * g.kernel * g.kernel)?;
                    Layer::Conv(Conv2d::new(weight, vec![T::ZERO; g.cout], p.activation, noise, *g)?)
                }
                PlanKind::Pool { kind, kernel, stride } => Layer::Pool(Pool::new(*kind, *kernel, *stride, p.input)?),
                PlanKind::Activation => Layer::Activation(ActivationLayer::new(p.activation)),
                PlanKind::Noise => Layer::Noise(NoiseLayer::new(noise.expect("a noise plan has its noise"))),
            });
        }
        let mut next = 0;
        let first_param = plans
            .iter()
            .map(|p| {
                let first = next;
                next += p.tensors();
                (p.tensors() > 0).then_some(first)
            })
            .collect();
        Ok(Self { stack: arch.stack.clone(), plans, layers, first_param, seed, grad_between: Default::default() })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The stack the network was built from.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// What each layer is (shapes, modules, noise), in order.
    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    pub fn layers(&self) -> &[Layer<T>] {
        &self.layers
    }

    pub fn layers_mut(&mut self) -> &mut [Layer<T>] {
        &mut self.layers
    }

    pub fn input_shape(&self) -> Shape {
        self.stack.input
    }

    pub fn output_shape(&self) -> Shape {
        self.plans[self.plans.len() - 1].output
    }

    /// Values per input example.
    pub fn inputs(&self) -> usize {
        self.stack.input.units()
    }

    /// Values per output.
    pub fn outputs(&self) -> usize {
        self.output_shape().units()
    }

    /// The activation on the network's output (identity when the last layer applies none).
    pub fn output_activation(&self) -> Activation {
        self.plans[self.plans.len() - 1].activation
    }

    /// Values one example needs in the largest workspace of any layer (what a batch size is
    /// checked against).
    pub fn values_per_example(&self) -> usize {
        self.plans.iter().map(Plan::values_per_example).max().unwrap_or(0)
    }

    /// The noise of the stack, in the order of its tokens.
    pub fn noises(&self) -> Vec<&Noise<T>> {
        self.layers.iter().filter_map(Layer::noise).collect()
    }

    /// The first layer whose last output holds a value that is not finite, as the network's
    /// summary names it (`modules 1-2 (dense100,relu)`), with that value; `None` when all are.
    pub fn first_non_finite_output(&self) -> Option<String> {
        for (p, layer) in self.plans.iter().zip(&self.layers) {
            if let Some(v) = layer.output().as_slice().iter().find(|v| !v.to_f64().is_finite()) {
                let tokens: Vec<String> = self.stack.tokens[p.modules.clone()].iter().map(Token::text).collect();
                let last = p.modules.end.saturating_sub(1);
                return Some(format!(
                    "modules {}-{last} ({}), which output {}",
                    p.modules.start,
                    tokens.join(","),
                    v.to_f64()
                ));
            }
        }
        None
    }

    /// The output of the last forward pass.
    pub fn output(&self) -> &Matrix<T> {
        self.layers[self.layers.len() - 1].output()
    }

    /// Forward pass of a batch `x` [m, inputs] in `mode`; returns the output [m, outputs].
    pub fn forward(&mut self, x: &Matrix<T>, mode: Mode) -> Result<&Matrix<T>> {
        if x.cols() != self.inputs() {
            return Err(shape(
                "forward",
                format!("input has {} columns, the network takes {}", x.cols(), self.inputs()),
            ));
        }
        let seed = self.seed;
        for l in 0..self.layers.len() {
            let (done, rest) = self.layers.split_at_mut(l);
            let input = if l == 0 { x } else { done[l - 1].output() };
            rest[0].forward(input, mode, seed)?;
        }
        Ok(self.output())
    }

    /// Backward pass from `d_output` = ∂J/∂output of the last forward pass. Fills every layer's
    /// parameter gradients; writes ∂J/∂x into `d_input` when it is given.
    pub fn backward(&mut self, d_output: &Matrix<T>, d_input: Option<&mut Matrix<T>>) -> Result<()> {
        self.backward_each(d_output, d_input, |_, layer, da, da_in| layer.backward(da, da_in))
    }

    /// The layers from last to first: `layer_backward(l, layer, da, da_in)` runs layer l's
    /// backward from `da` = ∂J/∂output and writes ∂J/∂input into `da_in` (for layer 0,
    /// `d_input`). The gradient flows between layers through the two `grad_between` buffers.
    fn backward_each(
        &mut self,
        d_output: &Matrix<T>,
        mut d_input: Option<&mut Matrix<T>>,
        mut layer_backward: impl FnMut(usize, &mut Layer<T>, &Matrix<T>, Option<&mut Matrix<T>>) -> Result<()>,
    ) -> Result<()> {
        let last = self.layers.len() - 1;
        let [mut between, mut next] = std::mem::take(&mut self.grad_between);
        let result = (|| {
            for l in (0..=last).rev() {
                let da = if l == last { d_output } else { &next };
                let da_in = if l > 0 { Some(&mut between) } else { d_input.take() };
                layer_backward(l, &mut self.layers[l], da, da_in)?;
                if l > 0 {
                    std::mem::swap(&mut between, &mut next);
                }
            }
            Ok(())
        })();
        // Put the buffers back in their original roles, so every step gives each the same shape
        // and nothing is reallocated.
        if last % 2 == 1 {
            std::mem::swap(&mut between, &mut next);
        }
        self.grad_between = [between, next];
        result
    }

    /// Every parameter tensor with its gradient, in order: the weight and bias of each dense layer
    /// and convolution, named by module number.
    pub fn params(&self) -> Vec<Param<'_, T>> {
        let mut out = Vec::new();
        for (layer, plan) in self.layers.iter().zip(&self.plans) {
            if let Some(p) = layer.parameters() {
                let m = plan.module;
                let (w, wg) = (p.weight, p.weight_grad);
                out.push(Param {
                    name: format!("{m}.weight"),
                    shape: w.shape(),
                    value: w.as_slice(),
                    grad: wg.as_slice(),
                });
                out.push(Param {
                    name: format!("{m}.bias"),
                    shape: (p.bias.len(), 1),
                    value: p.bias,
                    grad: p.bias_grad,
                });
                if let Some((value, grad)) = p.keep_logit {
                    out.push(Param { name: format!("{m}.keep_logit"), shape: (value.len(), 1), value, grad });
                }
            }
        }
        out
    }

    /// Parameter tensors in all.
    fn tensors(&self) -> usize {
        self.plans.iter().map(Plan::tensors).sum()
    }

    /// Mutable values of parameter tensor `index` (the order of [`Network::params`]).
    pub fn param_values_mut(&mut self, index: usize) -> &mut [T] {
        let (mut rest, tensors) = (index, self.tensors());
        for (layer, plan) in self.layers.iter_mut().zip(&self.plans) {
            if rest < plan.tensors() {
                return layer.tensor_mut(rest).expect("a tensor the plan counts");
            }
            rest -= plan.tensors();
        }
        panic!("parameter index {index} of {tensors}")
    }

    /// Sets the coefficients of every concrete dropout's regulariser (math.md N6; none by default).
    pub fn set_concrete_regularizer(&mut self, regularizer: ConcreteRegularizer) {
        for layer in &mut self.layers {
            if let Some(c) = layer.noise_mut().and_then(Noise::concrete_mut) {
                c.set_regularizer(regularizer);
            }
        }
    }

    /// The concrete regularisers' R at the current parameters (0 without concrete dropout): what
    /// backward adds the gradient of, besides the loss's.
    pub fn regularizer(&self) -> f64 {
        self.layers
            .iter()
            .filter_map(|l| {
                let weight = &l.parameters()?.weight;
                l.noise().and_then(Noise::concrete).map(|c| c.regularizer_value(weight))
            })
            .sum()
    }

    /// The learned keep of every concrete dropout: the module number of the layer it feeds and σ(θ)
    /// per input unit (per channel of a feature map).
    pub fn learned_keep(&self) -> Vec<(usize, Vec<f64>)> {
        let concrete = |l: &Layer<T>| l.noise().and_then(Noise::concrete).map(|c| c.keep_values());
        self.layers.iter().zip(&self.plans).filter_map(|(l, p)| concrete(l).map(|k| (p.module, k))).collect()
    }

    /// Number of trainable scalars.
    pub fn param_count(&self) -> usize {
        self.plans.iter().map(Plan::params).sum()
    }
}

impl Network<f32> {
    /// Backward pass from `d_output` with the optimizer's update of every parameter, as one step
    /// of training: each weight matrix is updated block by block while the product computing its
    /// gradient finishes that block (so the update reads the gradient from cache and runs in the
    /// product's threads), after the input gradient that needs the old weights. The result is the
    /// same, bit for bit, as [`Network::backward`] followed by [`Network::apply_update`]. The
    /// weight gradients exist only block by block, inside the products: `weight_grad` does not
    /// hold them afterwards (the bias gradients are stored).
    pub fn backward_and_update(&mut self, d_output: &Matrix<f32>, opt: &mut Optimizer, epoch: usize) -> Result<()> {
        // taken for the step (backward_each borrows the network) and put back after it
        let first_param = std::mem::take(&mut self.first_param);
        let p = opt.begin_step(epoch, self.tensors());
        let norm_limit = opt.config.max_norm.map(|c| c as f32);
        let result = self.backward_each(d_output, None, |l, layer, da, da_in| {
            let Some(first) = first_param[l] else { return layer.backward(da, da_in) };
            let (w_slots, b_slots, logit_slots) = match &mut opt.slots[first..] {
                [w, b, rest @ ..] => (w, b, rest.first_mut()),
                _ => unreachable!("begin_step made a slot per parameter tensor"),
            };
            let shape = layer.parameters().map(|p| p.weight.shape()).expect("a parameter layer");
            let block_update = BlockUpdate::new(w_slots, shape, p, norm_limit);
            let apply = |rows: Range<usize>, cols: Range<usize>, g: *const f32, ldg: usize, w: *mut f32| {
                // SAFETY: the product gives each block of the weight gradient to one thread, and
                // g and w are that block of the layer's gradient and the layer's weights.
                unsafe { block_update.apply(rows, cols, g, ldg, w) }
            };
            let (weight, bias, bias_grad, concrete, complete) = match layer {
                Layer::Dense(d) => {
                    let complete = d.backward_then(da, da_in, Some(&apply))?;
                    let concrete = d.noise.as_mut().and_then(Noise::concrete_mut);
                    (&mut d.weight, &mut d.bias, &d.bias_grad, concrete, complete)
                }
                Layer::Conv(c) => {
                    let complete = c.backward_then(da, da_in, Some(&apply))?;
                    let concrete = c.noise.as_mut().and_then(Noise::concrete_mut);
                    (&mut c.weight, &mut c.bias, &c.bias_grad, concrete, complete)
                }
                _ => unreachable!("only dense layers and convolutions have parameters"),
            };
            if let (false, Some(c)) = (complete, norm_limit) {
                let width = weight.cols();
                max_norm(weight.as_mut_slice(), width, c);
            }
            update(bias, bias_grad, b_slots, &p, false);
            if let (Some(c), Some(slots)) = (concrete, logit_slots) {
                // keep logits: no weight decay, no max-norm
                update(&mut c.logit, &c.logit_grad, slots, &p, false);
            }
            Ok(())
        });
        self.first_param = first_param;
        result
    }

    /// One optimizer update of every parameter from its stored gradients, in epoch `epoch` (the
    /// unfused path: [`Network::backward_and_update`] makes the same update of each weight matrix
    /// while its gradient is computed).
    pub fn apply_update(&mut self, opt: &mut Optimizer, epoch: usize) {
        let p = opt.begin_step(epoch, self.tensors());
        let c = opt.config.max_norm.map(|c| c as f32);
        let mut slot = 0;
        for layer in &mut self.layers {
            let (weight, weight_grad, bias, bias_grad, concrete) = match layer {
                Layer::Dense(d) => {
                    let concrete = d.noise.as_mut().and_then(Noise::concrete_mut);
                    (&mut d.weight, &d.weight_grad, &mut d.bias, &d.bias_grad, concrete)
                }
                Layer::Conv(v) => {
                    let concrete = v.noise.as_mut().and_then(Noise::concrete_mut);
                    (&mut v.weight, &v.weight_grad, &mut v.bias, &v.bias_grad, concrete)
                }
                _ => continue,
            };
            let width = weight.cols();
            update_rows(weight.as_mut_slice(), weight_grad.as_slice(), &mut opt.slots[slot], &p, true, width, c);
            update(bias, bias_grad, &mut opt.slots[slot + 1], &p, false);
            slot += 2;
            if let Some(concrete) = concrete {
                update(&mut concrete.logit, &concrete.logit_grad, &mut opt.slots[slot], &p, false);
                slot += 1;
            }
        }
    }
}

/// A table of the layers: the tokens each is made of, its output shape, its noise's keep
/// probabilities and its parameter count.
impl<T: Scalar> fmt::Display for Network<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<8} {:<34} {:>12} {:>10}", "modules", "layer", "output", "params")?;
        writeln!(f, "{:<8} {:<34} {:>12} {:>10}", "", "input", self.stack.input.to_string(), "")?;
        for (p, layer) in self.plans.iter().zip(&self.layers) {
            let tokens: Vec<String> = self.stack.tokens[p.modules.clone()].iter().map(Token::text).collect();
            let mut name = tokens.join(",");
            if let Some(noise) = layer.noise() {
                let k = KeepSummary::of(p.module, noise.keep().values());
                if noise.concrete().is_some() {
                    name.push_str(&format!(" (learned keep {:.3}, {:.3}..{:.3})", k.mean, k.min, k.max));
                } else if k.min != k.max {
                    name.push_str(&format!(" (keep {}..{})", k.min, k.max));
                }
            }
            let modules = if p.modules.len() == 1 {
                p.modules.start.to_string()
            } else {
                format!("{}-{}", p.modules.start, p.modules.end - 1)
            };
            writeln!(f, "{:<8} {:<34} {:>12} {:>10}", modules, name, p.output.to_string(), p.params())?;
        }
        let scaling = self.noises().first().map_or("none".to_string(), |n| n.scaling().to_string());
        write!(f, "total parameters: {}, dropout: {scaling}, seed: {}", self.param_count(), self.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lists_layers_keep_and_parameter_count() {
        let arch =
            Architecture::mlp(&[784, 1024, 10], Activation::Relu, Activation::Identity, &[0.8, 0.5], Scaling::Inverted)
                .unwrap();
        let net = Network::<f32>::new(&arch, 1).unwrap();
        let text = net.to_string();
        assert!(text.contains("keep0.8,dense1024,relu") && text.contains("keep0.5,dense10"), "{text}");
        assert!(text.contains(&format!("total parameters: {}", 784 * 1024 + 1024 + 1024 * 10 + 10)), "{text}");
        let names: Vec<String> = net.params().iter().map(|p| p.name.clone()).collect();
        assert_eq!(names, ["1.weight", "1.bias", "4.weight", "4.bias"]);
    }

    #[test]
    fn keep_errors_name_the_layer() {
        let err = Architecture::mlp(&[4, 3, 2], Activation::Relu, Activation::Identity, &[0.8, 1.2], Scaling::Inverted)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1.2") && err.contains("layer 1"), "{err}");
    }

    #[test]
    fn wrong_input_width_is_an_error() {
        let arch =
            Architecture::mlp(&[4, 3], Activation::Relu, Activation::Identity, &[1.0], Scaling::Inverted).unwrap();
        let mut net = Network::<f64>::new(&arch, 1).unwrap();
        let err = net.forward(&Matrix::zeros(2, 5), Mode::Eval).unwrap_err().to_string();
        assert!(err.contains("5 columns") && err.contains("takes 4"), "{err}");
    }

    #[test]
    fn a_convolutional_stack_runs_forward_with_the_shapes_it_plans() {
        let stack = Stack::parse(
            "1x8x8,conv4k3p1,relu,maxpool2,spatial0.8,conv6k3,tanh,flatten,keep0.5,dense3",
            Scaling::Inverted,
        )
        .unwrap();
        let mut net = Network::<f64>::new(&Architecture::new(stack), 3).unwrap();
        assert_eq!(net.output_shape(), Shape::Flat(3));
        let shapes: Vec<String> = net.plans().iter().map(|p| p.output.to_string()).collect();
        assert_eq!(shapes, ["4x8x8", "4x4x4", "6x2x2", "3"]);
        let x = Matrix::from_fn(5, 64, |i, k| ((i * 5 + k) % 7) as f64 / 7.0);
        let out = net.forward(&x, Mode::Train { step: 0 }).unwrap();
        assert_eq!(out.shape(), (5, 3));
        let names: Vec<String> = net.params().iter().map(|p| p.name.clone()).collect();
        assert_eq!(names, ["0.weight", "0.bias", "4.weight", "4.bias", "8.weight", "8.bias"]);
        assert_eq!(net.noises().len(), 2);
    }
}
