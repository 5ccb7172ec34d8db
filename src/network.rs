//! Dense layers in sequence, the explicit [`Mode`] of every forward pass, parameter visiting and a
//! printable summary.

use crate::activation::Activation;
use crate::dropout::{Dropout, Keep, MaskDraw, Scaling};
use crate::error::{shape, Error, Result};
use crate::layer::Dense;
use crate::optim::{max_norm, update, update_rows, BlockUpdate, Optimizer};
use crate::rng::{Stream, StreamRng};
use crate::tensor::{Matrix, Scalar};
use std::fmt;
use std::ops::Range;

/// What a forward pass is for. Nothing else decides whether masks are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: masks drawn at generator address (seed, layer, `step`, row in batch, unit).
    Train { step: u32 },
    /// Evaluation: no masks; standard dropout multiplies by keep.
    Eval,
    /// Monte-Carlo dropout sample `sample`: masks drawn from their own stream, rows addressed by the
    /// example's index in the data set (`first_row` + row in batch), so a prediction does not depend
    /// on the batch size.
    McSample { sample: u32, first_row: u32 },
}

impl Mode {
    /// Where layer `layer`'s mask comes from, or `None` in evaluation.
    fn draw(self, seed: u64, layer: usize) -> Option<MaskDraw> {
        let layer = layer as u32;
        match self {
            Mode::Train { step } => Some(MaskDraw { seed, stream: Stream::Mask, layer, step, first_row: 0 }),
            Mode::Eval => None,
            Mode::McSample { sample, first_row } => {
                Some(MaskDraw { seed, stream: Stream::McMask, layer, step: sample, first_row })
            }
        }
    }
}

/// How initial weights are drawn (biases start at 0).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// N(0, 2/n_in) (He et al. 2015), for the ReLU family.
    He,
    /// N(0, 2/(n_in + n_out)) (Glorot & Bengio 2010).
    Glorot,
    /// N(0, σ²) with the given σ.
    Normal(f64),
}

impl Init {
    /// He for the ReLU family, Glorot otherwise.
    pub fn for_activation(act: Activation) -> Self {
        match act {
            Activation::Relu | Activation::LeakyRelu | Activation::Elu | Activation::Selu | Activation::Gelu => {
                Init::He
            }
            _ => Init::Glorot,
        }
    }

    fn sigma(self, inputs: usize, outputs: usize) -> f64 {
        match self {
            Init::He => (2.0 / inputs as f64).sqrt(),
            Init::Glorot => (2.0 / (inputs + outputs) as f64).sqrt(),
            Init::Normal(sigma) => sigma,
        }
    }
}

/// Everything that defines a network's shape: unit counts, one activation and one input keep vector
/// per dense layer, the dropout convention and the initialisation.
#[derive(Clone, Debug)]
pub struct Architecture {
    /// Units per layer, input first: `[784, 1024, 1024, 10]`.
    pub sizes: Vec<usize>,
    /// Activation of each dense layer (`sizes.len() − 1` of them).
    pub activations: Vec<Activation>,
    /// Keep probabilities of each dense layer's input (`sizes.len() − 1` of them).
    pub keep: Vec<Keep>,
    pub scaling: Scaling,
    pub init: Init,
}

impl Architecture {
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
        let keep = keep
            .iter()
            .zip(sizes)
            .enumerate()
            .map(|(l, (&p, &n))| Keep::of_layer(vec![p; n], l))
            .collect::<Result<_>>()?;
        let mut activations = vec![hidden; layers];
        activations[layers - 1] = output;
        Ok(Self { sizes: sizes.to_vec(), activations, keep, scaling, init: Init::for_activation(hidden) })
    }
}

/// Checks unit counts (input first) against the limits of [`crate::limits`] before anything is
/// allocated: every count in 1..=MAX_LAYER_UNITS, every weight matrix within MAX_TENSOR_ELEMENTS,
/// all parameters together within MAX_NETWORK_PARAMS.
pub fn check_sizes(sizes: &[usize]) -> Result<()> {
    use crate::limits::{MAX_LAYERS, MAX_LAYER_UNITS, MAX_NETWORK_PARAMS, MAX_TENSOR_ELEMENTS};
    if sizes.len() < 2 || sizes.len() > MAX_LAYERS + 1 {
        return Err(Error::Config(format!(
            "a network has 1 to {MAX_LAYERS} layers, not {}",
            sizes.len().saturating_sub(1)
        )));
    }
    if let Some((l, &n)) = sizes.iter().enumerate().find(|(_, &n)| n == 0 || n > MAX_LAYER_UNITS) {
        return Err(Error::Config(format!("layer size {n} (position {l}) is outside 1..={MAX_LAYER_UNITS}")));
    }
    let mut total = 0usize;
    for pair in sizes.windows(2) {
        let weights = pair[0] * pair[1]; // both ≤ 2^24: no overflow on 64-bit
        if weights > MAX_TENSOR_ELEMENTS {
            return Err(Error::Config(format!(
                "a {}x{} weight matrix has more than {MAX_TENSOR_ELEMENTS} values",
                pair[1], pair[0]
            )));
        }
        total += weights + pair[1];
    }
    if total > MAX_NETWORK_PARAMS {
        return Err(Error::Config(format!(
            "{total} parameters, more than the {MAX_NETWORK_PARAMS} a network may have"
        )));
    }
    Ok(())
}

/// One parameter tensor and its gradient, as the optimizer and the gradient check see it.
pub struct Param<'a, T: Scalar> {
    /// `layers.N.weight` or `layers.N.bias`, N counting dense layers from 0 (PyTorch's names).
    pub name: String,
    /// [out, in] for weights, [out] (as [out, 1]) for biases.
    pub shape: (usize, usize),
    pub value: &'a [T],
    pub grad: &'a [T],
}

/// Dense layers in sequence, with the seed that addresses their masks.
#[derive(Clone, Debug)]
pub struct Network<T: Scalar> {
    layers: Vec<Dense<T>>,
    seed: u64,
    /// ∂J/∂a between two layers during backward: two buffers used in turn, reused across steps.
    grad_between: [Matrix<T>; 2],
}

impl<T: Scalar> Network<T> {
    /// A freshly initialised network: weights drawn from the `Init` stream of `seed` (layer l's
    /// w[j,k] is normal draw number j·n_in + k of stream (seed, Init, l, 0)), biases zero.
    pub fn new(arch: &Architecture, seed: u64) -> Result<Self> {
        let layers = arch.sizes.len().saturating_sub(1);
        if layers == 0 || arch.activations.len() != layers || arch.keep.len() != layers {
            return Err(Error::Config(format!(
                "{} sizes need {} activations and keep vectors, got {} and {}",
                arch.sizes.len(),
                layers,
                arch.activations.len(),
                arch.keep.len()
            )));
        }
        check_sizes(&arch.sizes)?;
        let mut dense = Vec::with_capacity(layers);
        for l in 0..layers {
            let (inputs, outputs) = (arch.sizes[l], arch.sizes[l + 1]);
            if arch.keep[l].units() != inputs {
                return Err(shape(
                    "Network::new",
                    format!("layer {l} has {inputs} inputs but {} keep values", arch.keep[l].units()),
                ));
            }
            let sigma = arch.init.sigma(inputs, outputs);
            let mut rng = StreamRng::new(seed, Stream::Init, l as u32, 0);
            let mut weight = Matrix::try_zeros(outputs, inputs)?;
            weight.as_mut_slice().iter_mut().for_each(|w| *w = T::from_f64(sigma * rng.normal()));
            let dropout = Dropout::new(arch.keep[l].clone(), arch.scaling);
            dense.push(Dense::new(weight, vec![T::ZERO; outputs], arch.activations[l], dropout)?);
        }
        Self::from_layers(dense, seed)
    }

    /// A network of given layers (their sizes must chain).
    pub fn from_layers(layers: Vec<Dense<T>>, seed: u64) -> Result<Self> {
        for (l, pair) in layers.windows(2).enumerate() {
            if pair[0].outputs() != pair[1].inputs() {
                return Err(shape(
                    "Network::from_layers",
                    format!("layer {l} has {} outputs, layer {} takes {}", pair[0].outputs(), l + 1, pair[1].inputs()),
                ));
            }
        }
        if layers.is_empty() {
            return Err(Error::Config("a network needs at least one layer".into()));
        }
        Ok(Self { layers, seed, grad_between: [Matrix::zeros(0, 0), Matrix::zeros(0, 0)] })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn layers(&self) -> &[Dense<T>] {
        &self.layers
    }

    pub fn layers_mut(&mut self) -> &mut [Dense<T>] {
        &mut self.layers
    }

    pub fn inputs(&self) -> usize {
        self.layers[0].inputs()
    }

    pub fn outputs(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs()
    }

    /// Units of the widest layer input or output (what a batch's largest activation holds per row).
    pub fn widest_layer(&self) -> usize {
        self.layers.iter().map(|l| l.inputs().max(l.outputs())).max().unwrap_or(0)
    }

    /// The output of the last forward pass.
    pub fn output(&self) -> &Matrix<T> {
        self.layers[self.layers.len() - 1].output()
    }

    /// Forward pass of a batch `x` [m, n_0] in `mode`; returns the output [m, n_L].
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
            rest[0].forward(input, mode.draw(seed, l).as_ref())?;
        }
        Ok(self.output())
    }

    /// Backward pass from `d_output` = ∂J/∂output of the last forward pass. Fills every layer's
    /// parameter gradients; writes ∂J/∂x into `d_input` when it is given.
    pub fn backward(&mut self, d_output: &Matrix<T>, d_input: Option<&mut Matrix<T>>) -> Result<()> {
        self.backward_each(d_output, d_input, |_, layer, da, da_in| layer.backward(da, da_in))
    }

    /// The layers from last to first: `layer_backward(l, layer, da, da_in)` runs layer l's
    /// backward from `da` = ∂J/∂a_next and writes ∂J/∂a of its input into `da_in` (for layer 0,
    /// `d_input`). ∂J/∂a flows from layer l+1 back into layer l through the two `grad_between`
    /// buffers.
    fn backward_each(
        &mut self,
        d_output: &Matrix<T>,
        mut d_input: Option<&mut Matrix<T>>,
        mut layer_backward: impl FnMut(usize, &mut Dense<T>, &Matrix<T>, Option<&mut Matrix<T>>) -> Result<()>,
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

    /// Every parameter tensor with its gradient, in order: layers.0.weight, layers.0.bias, ...
    pub fn params(&self) -> Vec<Param<'_, T>> {
        let mut out = Vec::with_capacity(2 * self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            out.push(Param {
                name: format!("layers.{l}.weight"),
                shape: layer.weight.shape(),
                value: layer.weight.as_slice(),
                grad: layer.weight_grad.as_slice(),
            });
            out.push(Param {
                name: format!("layers.{l}.bias"),
                shape: (layer.bias.len(), 1),
                value: &layer.bias,
                grad: &layer.bias_grad,
            });
        }
        out
    }

    /// Mutable values of parameter tensor `index` (the order of [`Network::params`]).
    pub fn param_values_mut(&mut self, index: usize) -> &mut [T] {
        let layer = &mut self.layers[index / 2];
        if index.is_multiple_of(2) {
            layer.weight.as_mut_slice()
        } else {
            &mut layer.bias
        }
    }

    /// Number of trainable scalars.
    pub fn param_count(&self) -> usize {
        self.layers.iter().map(|l| l.weight.as_slice().len() + l.bias.len()).sum()
    }
}

impl Network<f32> {
    /// Backward pass from `d_output` with the optimizer's update of every parameter, as one step
    /// of training: each weight matrix is updated block by block while the product computing its
    /// gradient finishes that block (so the update reads the gradient from cache and runs in the
    /// product's threads), after the input gradient that needs the old weights. The result is the
    /// same, bit for bit, as [`Network::backward`] followed by [`Network::apply_update`]. The weight
    /// gradients exist only block by block, inside the products: `weight_grad` does not hold them
    /// afterwards (the bias gradients are stored).
    pub fn backward_and_update(&mut self, d_output: &Matrix<f32>, opt: &mut Optimizer, epoch: usize) -> Result<()> {
        let p = opt.begin_step(epoch, 2 * self.layers.len());
        let norm_limit = opt.config.max_norm.map(|c| c as f32);
        self.backward_each(d_output, None, |l, layer, da, da_in| {
            let (w_slots, b_slots) = match &mut opt.slots[2 * l..] {
                [w, b, ..] => (w, b),
                _ => unreachable!("begin_step made two slots per layer"),
            };
            let block_update = BlockUpdate::new(w_slots, layer.weight.shape(), p, norm_limit);
            let apply = |rows: Range<usize>, cols: Range<usize>, g: *const f32, ldg: usize, w: *mut f32| {
                // SAFETY: the product gives each block of the weight gradient to one thread, and
                // g and w are that block of the layer's gradient and the layer's weights.
                unsafe { block_update.apply(rows, cols, g, ldg, w) }
            };
            let complete = layer.backward_then(da, da_in, Some(&apply))?;
            if let (false, Some(c)) = (complete, norm_limit) {
                let width = layer.inputs();
                max_norm(layer.weight.as_mut_slice(), width, c);
            }
            update(&mut layer.bias, &layer.bias_grad, b_slots, &p, false);
            Ok(())
        })
    }
}

impl Network<f32> {
    /// One optimizer update of every parameter from its stored gradients, in epoch `epoch` (the
    /// unfused path: [`Network::backward_and_update`] makes the same update of each weight matrix
    /// while its gradient is computed).
    pub fn apply_update(&mut self, opt: &mut Optimizer, epoch: usize) {
        let p = opt.begin_step(epoch, 2 * self.layers.len());
        let c = opt.config.max_norm.map(|c| c as f32);
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let inputs = layer.inputs();
            let weight = layer.weight.as_mut_slice();
            update_rows(weight, layer.weight_grad.as_slice(), &mut opt.slots[2 * l], &p, true, inputs, c);
            update(&mut layer.bias, &layer.bias_grad, &mut opt.slots[2 * l + 1], &p, false);
        }
    }
}

/// A table of layers, shapes, activations, keep probabilities and parameter counts.
impl<T: Scalar> fmt::Display for Network<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<7} {:>12} {:<11} {:<16} {:>10}", "layer", "shape", "activation", "keep (input)", "params")?;
        for (l, layer) in self.layers.iter().enumerate() {
            let keep = layer.dropout.keep().values();
            let (lo, hi) = keep.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &p| (lo.min(p), hi.max(p)));
            let keep_text = if lo == hi { format!("{lo}") } else { format!("{lo}..{hi} per unit") };
            let shape = format!("{}->{}", layer.inputs(), layer.outputs());
            let params = layer.weight.as_slice().len() + layer.bias.len();
            writeln!(f, "{:<7} {:>12} {:<11} {:<16} {:>10}", l, shape, layer.activation.name(), keep_text, params)?;
        }
        let scaling = self.layers[0].dropout.scaling();
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
        assert!(text.contains("784->1024") && text.contains("0.8") && text.contains("0.5"), "{text}");
        assert!(text.contains(&format!("total parameters: {}", 784 * 1024 + 1024 + 1024 * 10 + 10)), "{text}");
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
}
