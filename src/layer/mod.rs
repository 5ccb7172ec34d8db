//! Layers, each with an explicit forward and backward pass, and how a stack of tokens becomes a
//! list of them.
//!
//! A run-time layer is one of: a dense layer or a convolution (each with the noise token before it
//! and the activation token after it fused in, as math.md's D1–D7 write the layer), a pooling layer, an
//! activation that follows no dense or convolution, or a noise that precedes a pooling layer or an
//! activation. `flatten` is only a change of shape: a feature map's values already lie in one row.
//!
//! To add a layer kind: write its file here (forward, backward, output shape), give it a variant
//! of [`Layer`] and of [`crate::stack::Token`] (its `--arch` token and JSON), and plan it in
//! [`plan`]; [`Layer`]'s methods then dispatch to it.

pub mod act;
pub mod conv;
pub mod dense;
pub mod noise;
pub mod pool;

pub use act::ActivationLayer;
pub use conv::{Conv2d, Geometry};
pub use dense::Dense;
pub use noise::Noise;
pub use pool::{Pool, PoolKind};

use crate::activation::Activation;
use crate::error::{Error, Result};
use crate::limits::{MAX_LAYERS, MAX_LAYER_UNITS, MAX_NETWORK_PARAMS, MAX_TENSOR_ELEMENTS};
use crate::stack::{NoiseKind, NoiseSpec, Shape, Stack, Token};
use crate::tensor::{Matrix, Scalar};

/// What a forward pass is for. Nothing else decides whether masks are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: masks drawn at generator address (seed, noise, `step`, row in batch, unit).
    Train { step: u32 },
    /// Evaluation: no masks; standard dropout multiplies by keep.
    Eval,
    /// Monte-Carlo dropout sample `sample`: masks drawn from their own stream, rows addressed by the
    /// example's index in the data set (`first_row` + row in batch), so a prediction does not depend
    /// on the batch size.
    McSample { sample: u32, first_row: u32 },
}

/// One run-time layer. (The variants differ in size; a network holds a handful of them, so
/// they are not boxed.)
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Layer<T: Scalar> {
    Dense(Dense<T>),
    Conv(Conv2d<T>),
    Pool(Pool<T>),
    Activation(ActivationLayer<T>),
    Noise(NoiseLayer<T>),
}

/// A layer's weight and bias with their gradients, and the keep logits of concrete dropout on its
/// input with theirs.
pub struct Parameters<'a, T: Scalar> {
    pub weight: &'a Matrix<T>,
    pub bias: &'a [T],
    pub weight_grad: &'a Matrix<T>,
    pub bias_grad: &'a [T],
    pub keep_logit: Option<(&'a [T], &'a [T])>,
}

/// A noise with no dense layer or convolution after it to fuse into, and its output.
#[derive(Clone, Debug)]
pub struct NoiseLayer<T: Scalar> {
    pub noise: Noise<T>,
    out: Matrix<T>,
}

impl<T: Scalar> NoiseLayer<T> {
    pub fn new(noise: Noise<T>) -> Self {
        Self { noise, out: Matrix::default() }
    }
}

impl<T: Scalar> Layer<T> {
    /// Forward pass of a batch `x` (rows are examples) in `mode`; the result is [`Layer::output`].
    pub fn forward(&mut self, x: &Matrix<T>, mode: Mode, seed: u64) -> Result<()> {
        match self {
            Layer::Dense(l) => l.forward(x, mode, seed),
            Layer::Conv(l) => l.forward(x, mode, seed),
            Layer::Pool(l) => l.forward(x),
            Layer::Activation(l) => {
                l.forward(x);
                Ok(())
            }
            Layer::Noise(l) => l.noise.forward(x, &mut l.out, mode, seed),
        }
    }

    /// The output of the last forward pass.
    pub fn output(&self) -> &Matrix<T> {
        match self {
            Layer::Dense(l) => l.output(),
            Layer::Conv(l) => l.output(),
            Layer::Pool(l) => l.output(),
            Layer::Activation(l) => l.output(),
            Layer::Noise(l) => &l.out,
        }
    }

    /// Backward pass from `d_out` = ∂J/∂output: fills the parameter gradients and, when `d_in` is
    /// given, writes ∂J/∂input.
    pub fn backward(&mut self, d_out: &Matrix<T>, d_in: Option<&mut Matrix<T>>) -> Result<()> {
        match self {
            Layer::Dense(l) => l.backward(d_out, d_in),
            Layer::Conv(l) => l.backward(d_out, d_in),
            Layer::Pool(l) => d_in.map_or(Ok(()), |d| l.backward(d_out, d)),
            Layer::Activation(l) => d_in.map_or(Ok(()), |d| l.backward(d_out, d)),
            Layer::Noise(l) => {
                if let Some(d) = d_in {
                    l.noise.backward(d_out, d);
                }
                Ok(())
            }
        }
    }

    /// The weight and bias of a layer that has parameters, with their gradients.
    pub fn parameters(&self) -> Option<Parameters<'_, T>> {
        match self {
            Layer::Dense(l) => Some(Parameters {
                weight: &l.weight,
                bias: &l.bias,
                weight_grad: &l.weight_grad,
                bias_grad: &l.bias_grad,
                keep_logit: l.noise.as_ref().and_then(Noise::concrete).map(|c| (&c.logit[..], &c.logit_grad[..])),
            }),
            Layer::Conv(l) => Some(Parameters {
                weight: &l.weight,
                bias: &l.bias,
                weight_grad: &l.weight_grad,
                bias_grad: &l.bias_grad,
                keep_logit: l.noise.as_ref().and_then(Noise::concrete).map(|c| (&c.logit[..], &c.logit_grad[..])),
            }),
            _ => None,
        }
    }

    /// The weight and bias values, mutable.
    pub fn parameters_mut(&mut self) -> Option<(&mut Matrix<T>, &mut Vec<T>)> {
        match self {
            Layer::Dense(l) => Some((&mut l.weight, &mut l.bias)),
            Layer::Conv(l) => Some((&mut l.weight, &mut l.bias)),
            _ => None,
        }
    }

    /// Parameter tensor `index` of the layer (weight, bias, keep logits), mutable.
    pub fn tensor_mut(&mut self, index: usize) -> Option<&mut [T]> {
        let (weight, bias, logit) = match self {
            Layer::Dense(l) => (&mut l.weight, &mut l.bias, l.noise.as_mut().and_then(Noise::concrete_mut)),
            Layer::Conv(l) => (&mut l.weight, &mut l.bias, l.noise.as_mut().and_then(Noise::concrete_mut)),
            _ => return None,
        };
        match index {
            0 => Some(weight.as_mut_slice()),
            1 => Some(bias),
            2 => logit.map(|c| &mut c.logit[..]),
            _ => None,
        }
    }

    /// The noise this layer applies (on its input, or as a whole).
    pub fn noise(&self) -> Option<&Noise<T>> {
        match self {
            Layer::Dense(l) => l.noise.as_ref(),
            Layer::Conv(l) => l.noise.as_ref(),
            Layer::Noise(l) => Some(&l.noise),
            _ => None,
        }
    }

    /// The noise, mutable (to set a fixed mask in tests).
    pub fn noise_mut(&mut self) -> Option<&mut Noise<T>> {
        match self {
            Layer::Dense(l) => l.noise.as_mut(),
            Layer::Conv(l) => l.noise.as_mut(),
            Layer::Noise(l) => Some(&mut l.noise),
            _ => None,
        }
    }

    /// The activation the layer applies (identity if none), and its input z of the last pass.
    pub fn activation(&self) -> Option<(Activation, &Matrix<T>)> {
        match self {
            Layer::Dense(l) => Some((l.activation, l.pre_activation())),
            Layer::Conv(l) => Some((l.activation, l.pre_activation())),
            Layer::Activation(l) => Some((l.activation, l.input())),
            _ => None,
        }
    }
}

/// What one run-time layer is, worked out from a stack before anything is allocated.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub kind: PlanKind,
    pub input: Shape,
    pub output: Shape,
    /// The stack tokens the layer is made of (module numbers of `nn.Sequential`).
    pub modules: std::ops::Range<usize>,
    /// The module that owns its parameters (`N.weight`, `N.bias`).
    pub module: usize,
    /// The noise on its input: spec, ordinal among the stack's noise tokens, the shape it acts on.
    pub noise: Option<(NoiseSpec, u32, Shape)>,
    pub activation: Activation,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PlanKind {
    /// A dense layer; `from_map` is the feature map a `flatten` made its input from.
    Dense {
        units: usize,
        from_map: Option<Shape>,
    },
    Conv(Geometry),
    Pool {
        kind: PoolKind,
        kernel: usize,
        stride: usize,
    },
    Activation,
    Noise,
}

impl Plan {
    /// Weight and bias shapes as a model file stores them (PyTorch's layouts), when the layer has
    /// parameters.
    pub fn file_shapes(&self) -> Option<(Vec<usize>, Vec<usize>)> {
        match &self.kind {
            PlanKind::Dense { units, .. } => Some((vec![*units, self.input.units()], vec![*units])),
            PlanKind::Conv(g) => Some((vec![g.cout, g.cin, g.kernel, g.kernel], vec![g.cout])),
            _ => None,
        }
    }

    /// The number of keep logits of concrete dropout on the layer's input (one per unit, or one
    /// for the layer), if it has one.
    pub fn keep_logits(&self) -> Option<usize> {
        let (spec, _, shape) = self.noise.as_ref().filter(|n| n.0.noise == NoiseKind::Concrete)?;
        // as Noise::new reads it: no settings are the default ones
        let settings = spec.concrete.unwrap_or_default();
        Some(match (settings.per_layer, shape) {
            (true, _) => 1,
            (false, Shape::Map { c, .. }) => *c,
            (false, Shape::Flat(n)) => *n,
        })
    }

    /// Parameter tensors of the layer: weight and bias, and keep logits under concrete dropout.
    pub fn tensors(&self) -> usize {
        // (not through file_shapes, which allocates: this is counted in every training step)
        match self.kind {
            PlanKind::Dense { .. } | PlanKind::Conv(_) => 2 + usize::from(self.keep_logits().is_some()),
            _ => 0,
        }
    }

    /// Trainable values of the layer.
    pub fn params(&self) -> usize {
        let logits = self.keep_logits().unwrap_or(0);
        self.file_shapes().map_or(0, |(w, b)| w.iter().product::<usize>() + b[0] + logits)
    }

    /// Values one example of a batch needs in the layer's largest workspace.
    pub fn values_per_example(&self) -> usize {
        let io = self.input.units().max(self.output.units());
        match &self.kind {
            PlanKind::Conv(g) => io.max(g.oh * g.ow * g.patch()),
            _ => io,
        }
    }
}

/// The run-time layers of `stack`, checked against the limits of [`crate::limits`] and the rules of
/// the stack: a noise token before a module, dense layers on vectors (after `flatten`),
/// convolutions and pooling on feature maps.
pub fn plan(stack: &Stack) -> Result<Vec<Plan>> {
    if stack.input.units() == 0 || stack.input.units() > MAX_LAYER_UNITS {
        return Err(Error::Config(format!("the input {} is outside 1..={MAX_LAYER_UNITS} units", stack.input)));
    }
    let mut plans: Vec<Plan> = Vec::new();
    let mut shape = stack.input;
    let mut pending: Option<(NoiseSpec, u32, Shape, usize)> = None;
    let mut noises = 0u32;
    let mut flattened: Option<Shape> = None;
    // the flatten token the next dense layer's modules start from (None once another module is
    // between them)
    let mut flatten_token: Option<usize> = None;
    let tokens = &stack.tokens;
    let mut i = 0;
    while i < tokens.len() {
        let at = |what: String| Error::Config(format!("--arch token {} ({}): {what}", i + 1, tokens[i].text()));
        // the activation token right after a dense layer or convolution is fused into it
        let fused = |i: usize| match tokens.get(i + 1) {
            Some(Token::Activation { activation }) => Some(*activation),
            _ => None,
        };
        let standalone_noise = |pending: &mut Option<(NoiseSpec, u32, Shape, usize)>, plans: &mut Vec<Plan>| {
            if let Some((spec, ordinal, on, token)) = pending.take() {
                plans.push(Plan {
                    kind: PlanKind::Noise,
                    input: on,
                    output: on,
                    modules: token..token + 1,
                    module: token,
                    noise: Some((spec, ordinal, on)),
                    activation: Activation::Identity,
                });
            }
        };
        let next_is = |dense_only: bool| match tokens[i] {
            Token::Dense { .. } | Token::Flatten => true,
            Token::Conv { .. } => !dense_only,
            _ => false,
        };
        match pending.as_ref().map(|p| p.0.noise) {
            Some(NoiseKind::DropConnect) if !next_is(true) => {
                return Err(at(
                    "dropconnect masks the weights of a dense layer: put the dense layer right after it".into()
                ))
            }
            Some(NoiseKind::Concrete) if !next_is(false) => {
                let why = "concrete dropout's regulariser needs the weights it feeds: put a dense layer or a \
                           convolution right after it";
                return Err(at(why.into()));
            }
            _ => {}
        }
        match &tokens[i] {
            Token::Noise(spec) => {
                if spec.concrete.is_some() && spec.noise != NoiseKind::Concrete {
                    return Err(at(format!(
                        "concrete settings on {} noise would have no effect",
                        spec.noise.token_name()
                    )));
                }
                if pending.is_some() {
                    return Err(at("two noise tokens in a row: a noise acts on the next module's input".into()));
                }
                pending = Some((spec.clone(), noises, shape, i));
                noises += 1;
            }
            Token::Flatten => {
                if let Shape::Map { .. } = shape {
                    flattened = Some(shape);
                    flatten_token = Some(i);
                    shape = Shape::Flat(shape.units());
                } else {
                    return Err(at(format!("flatten needs a feature map, not {shape} units")));
                }
            }
            Token::Dense { units } => {
                let Shape::Flat(_) = shape else {
                    return Err(at(format!(
                        "a dense layer needs a vector: put flatten before it (the input is {shape})"
                    )));
                };
                let activation = fused(i).unwrap_or(Activation::Identity);
                let start = pending.as_ref().map_or(i, |p| p.3).min(flatten_token.take().unwrap_or(i));
                let end = if fused(i).is_some() { i + 2 } else { i + 1 };
                let noise = pending.take().map(|(spec, ordinal, on, _)| (spec, ordinal, on));
                let output = Shape::Flat(*units);
                plans.push(Plan {
                    kind: PlanKind::Dense { units: *units, from_map: flattened.take() },
                    input: shape,
                    output,
                    modules: start..end,
                    module: i,
                    noise,
                    activation,
                });
                shape = output;
                i = end;
                continue;
            }
            Token::Conv { channels, kernel, stride, padding } => {
                let geometry =
                    Geometry::new(shape, *channels, *kernel, *stride, *padding).map_err(|e| at(e.to_string()))?;
                let activation = fused(i).filter(|&a| a != Activation::Softmax).unwrap_or(Activation::Identity);
                let fuses = activation != Activation::Identity;
                let start = pending.as_ref().map_or(i, |p| p.3);
                let end = if fuses { i + 2 } else { i + 1 };
                let noise = pending.take().map(|(spec, ordinal, on, _)| (spec, ordinal, on));
                plans.push(Plan {
                    kind: PlanKind::Conv(geometry),
                    input: shape,
                    output: geometry.output(),
                    modules: start..end,
                    module: i,
                    noise,
                    activation,
                });
                flattened = None;
                shape = geometry.output();
                i = end;
                continue;
            }
            Token::MaxPool { kernel, stride } | Token::AvgPool { kernel, stride } => {
                standalone_noise(&mut pending, &mut plans);
                let kind = if matches!(tokens[i], Token::MaxPool { .. }) { PoolKind::Max } else { PoolKind::Avg };
                let what = if kind == PoolKind::Max { "max-pooling" } else { "average-pooling" };
                let output = pool::output_shape(shape, *kernel, *stride, what).map_err(|e| at(e.to_string()))?;
                plans.push(Plan {
                    kind: PlanKind::Pool { kind, kernel: *kernel, stride: *stride },
                    input: shape,
                    output,
                    modules: i..i + 1,
                    module: i,
                    noise: None,
                    activation: Activation::Identity,
                });
                flattened = None;
                shape = output;
            }
            Token::Activation { activation } => {
                standalone_noise(&mut pending, &mut plans);
                flatten_token = None;
                plans.push(Plan {
                    kind: PlanKind::Activation,
                    input: shape,
                    output: shape,
                    modules: i..i + 1,
                    module: i,
                    noise: None,
                    activation: *activation,
                });
            }
        }
        i += 1;
    }
    if let Some((_, _, _, token)) = pending {
        return Err(Error::Config(format!(
            "--arch token {} ({}): a noise token must come before a module (it acts on that module's input)",
            token + 1,
            tokens[token].text()
        )));
    }
    if flattened.is_some() {
        return Err(Error::Config("--arch: flatten must come before a dense layer".into()));
    }
    check_limits(&plans)?;
    Ok(plans)
}

/// Limits on the whole plan: layers, units, values per tensor, parameters.
fn check_limits(plans: &[Plan]) -> Result<()> {
    if plans.len() > MAX_LAYERS {
        return Err(Error::Config(format!("{} layers, more than the {MAX_LAYERS} a network may have", plans.len())));
    }
    if !plans.iter().any(|p| matches!(p.kind, PlanKind::Dense { .. } | PlanKind::Conv(_))) {
        return Err(Error::Config("--arch has no dense layer or convolution".into()));
    }
    let mut total = 0usize;
    for p in plans {
        if p.output.units() == 0 || p.output.units() > MAX_LAYER_UNITS {
            return Err(Error::Config(format!(
                "a layer's output of {} is outside 1..={MAX_LAYER_UNITS} units",
                p.output
            )));
        }
        if let Some((w, _)) = p.file_shapes() {
            let values = w.iter().product::<usize>();
            if values > MAX_TENSOR_ELEMENTS {
                return Err(Error::Config(format!(
                    "a weight tensor of {w:?} has more than {MAX_TENSOR_ELEMENTS} values"
                )));
            }
        }
        total = total.saturating_add(p.params());
    }
    if total > MAX_NETWORK_PARAMS {
        return Err(Error::Config(format!(
            "{total} parameters, more than the {MAX_NETWORK_PARAMS} a network may have"
        )));
    }
    Ok(())
}
