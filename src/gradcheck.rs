//! Gradient check: backward against central finite differences, in f64, under frozen masks.
//!
//! Masks are a pure function of their address (seed, layer, step, row, unit), so running the same
//! [`Mode`] again draws the same masks: the finite differences see exactly the function whose
//! gradient backward computed. For each parameter tensor (and the input) the error is
//! `‖analytic − numeric‖₂ / max(‖analytic‖₂ + ‖numeric‖₂, 1e-12)`; a case's error is its worst
//! tensor's, and a case passes at or below [`TOLERANCE`].

use crate::activation::Activation;
use crate::dropout::{ConcreteRegularizer, Scaling};
use crate::error::{Error, Result};
use crate::layer::{Layer, PoolKind};
use crate::loss::{Loss, Targets};
use crate::network::{Architecture, Init, Mode, Network};
use crate::rng::{Stream, StreamRng};
use crate::stack::{ConcreteSpec, NoiseKind, Stack, Token};
use crate::tensor::Matrix;

/// Half-width of the central difference.
pub const EPSILON: f64 = 1e-6;
/// The largest relative error a case may have.
pub const TOLERANCE: f64 = 1e-6;
/// No pre-activation of a kinked activation may lie closer than this to the kink: the finite
/// difference would straddle it.
pub const KINK_MARGIN: f64 = 1e-3;
/// No window of a max-pooling may have its two largest inputs closer than this: the maximum
/// would switch under the finite difference.
pub const TIE_MARGIN: f64 = 1e-3;
/// The training step whose masks the check freezes.
const STEP: u32 = 7;

/// How keep probabilities are set in a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepKind {
    /// A different keep per unit (per channel for spatial noise) in (0.35, 0.95), with the first
    /// at exactly 1.
    PerUnit,
    /// As the stack says (the MLP form: 0.8 on the input, 0.5 on hidden layers).
    PerLayer,
}

/// One configuration to check.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    /// The units-per-layer form of the network (`hidden`, `output` and `scaling` complete it)...
    pub sizes: Vec<usize>,
    /// ...or, when given, its token form (`hidden` and `output` then unused).
    pub tokens: Option<&'static str>,
    pub hidden: Activation,
    pub output: Activation,
    pub loss: Loss,
    pub keep: KeepKind,
    pub scaling: Scaling,
    pub batch: usize,
    /// Check in evaluation mode instead of training mode.
    pub eval: bool,
}

impl Case {
    fn new(name: &str, hidden: Activation, scaling: Scaling, keep: KeepKind, batch: usize) -> Self {
        Self {
            name: name.to_string(),
            sizes: vec![5, 7, 6, 3],
            tokens: None,
            hidden,
            output: Activation::Identity,
            loss: Loss::SoftmaxCrossEntropy,
            keep,
            scaling,
            batch,
            eval: false,
        }
    }
}

/// Every case `dropnet gradcheck` runs: each activation as hidden activation under both scalings
/// with per-unit keep, batch 1, every loss, softmax as hidden and as output activation, one layer
/// alone, and evaluation mode.
pub fn cases() -> Vec<Case> {
    use Activation::*;
    use KeepKind::*;
    use Scaling::*;
    let mut cases = Vec::new();
    for act in Activation::ALL {
        for scaling in [Inverted, Standard] {
            let prefix = if act == Softmax { "softmax-hidden".to_string() } else { act.name().to_string() };
            cases.push(Case::new(&format!("{prefix}-{scaling}-perunit-batch4"), act, scaling, PerUnit, 4));
        }
    }
    cases.push(Case::new("relu-inverted-perlayer-batch1", Relu, Inverted, PerLayer, 1));
    cases.push(Case::new("gelu-standard-perlayer-batch1", Gelu, Standard, PerLayer, 1));
    cases.push(Case::new("softmax-hidden-inverted-perlayer-batch1", Softmax, Inverted, PerLayer, 1));
    let mut c = Case::new("mse-sigmoid-output-inverted-perunit-batch3", Tanh, Inverted, PerUnit, 3);
    (c.output, c.loss) = (Sigmoid, Loss::MeanSquaredError);
    cases.push(c);
    let mut c = Case::new("mse-softmax-output-standard-perunit-batch3", Elu, Standard, PerUnit, 3);
    (c.output, c.loss) = (Softmax, Loss::MeanSquaredError);
    cases.push(c);
    let mut c = Case::new("bce-logits-inverted-perunit-batch3", Relu, Inverted, PerUnit, 3);
    (c.sizes, c.loss) = (vec![5, 7, 6, 4], Loss::BinaryCrossEntropyWithLogits);
    cases.push(c);
    let mut c = Case::new("gaussian-nll-regression-inverted-perunit-batch3", Relu, Inverted, PerUnit, 3);
    (c.sizes, c.loss) = (vec![5, 7, 6, 4], Loss::GaussianNll);
    cases.push(c);
    let mut c = Case::new("mse-regression-identity-output-standard-perunit-batch3", Tanh, Standard, PerUnit, 3);
    (c.sizes, c.loss) = (vec![5, 7, 6, 2], Loss::MeanSquaredError);
    cases.push(c);
    let mut c = Case::new("single-layer-inverted-perunit-batch4", Identity, Inverted, PerUnit, 4);
    c.sizes = vec![6, 4];
    cases.push(c);
    let mut c = Case::new("relu-inverted-perlayer-eval-batch4", Relu, Inverted, PerLayer, 4);
    c.eval = true;
    cases.push(c);
    let mut c = Case::new("tanh-standard-perunit-eval-batch4", Tanh, Standard, PerUnit, 4);
    c.eval = true;
    cases.push(c);
    cases.extend(stack_cases());
    cases
}

/// The cases of convolutional stacks: convolutions of stride 1 and 2, padding 0 and 2, one to five
/// channels; both poolings (inputs kept away from ties, [`TIE_MARGIN`]); flatten; per-unit,
/// per-channel and spatial noise on feature maps; a noise and an activation standing alone.
fn stack_cases() -> Vec<Case> {
    use KeepKind::*;
    use Scaling::*;
    let stacks: [(&str, &str, KeepKind, Scaling); 25] = [
        ("conv-s1-p0-relu", "2x6x6,keep0.8,conv3k3,relu,flatten,dense4", PerUnit, Inverted),
        ("conv-s2-p2-tanh", "1x7x7,keep0.9,conv4k3s2p2,tanh,flatten,keep0.7,dense3", PerLayer, Inverted),
        ("conv-channels", "3x5x5,conv2k2,sigmoid,keep0.6,conv5k3p1,elu,flatten,dense3", PerUnit, Standard),
        ("conv-maxpool", "2x6x6,conv3k3p1,tanh,maxpool2,flatten,keep0.8,dense3", PerLayer, Inverted),
        ("conv-maxpool-s1-overlapping", "1x5x5,conv2k2p1,tanh,maxpool3s1,flatten,dense3", PerLayer, Inverted),
        ("conv-avgpool", "2x6x6,conv3k3,tanh,avgpool2s1,flatten,dense3", PerLayer, Inverted),
        ("spatial-per-channel", "3x6x6,spatial0.7,conv4k3,relu,spatial0.6,flatten,dense3", PerUnit, Inverted),
        ("spatial-gelu", "3x6x6,spatial0.7,conv4k3,gelu,flatten,keep0.6,dense3", PerUnit, Standard),
        ("perunit-map-conv", "2x5x5,keep0.7,conv3k3,tanh,flatten,dense3", PerUnit, Inverted),
        ("perchannel-map-conv", "3x5x5,keep0.7,conv2k3,selu,flatten,dense3", PerLayer, Inverted),
        ("noise-before-maxpool", "2x6x6,conv3k3p1,tanh,keep0.7,maxpool2,flatten,dense3", PerUnit, Inverted),
        ("activation-after-avgpool", "2x6x6,conv3k3p1,avgpool2,relu,spatial0.8,flatten,dense3", PerUnit, Standard),
        ("gaussian-mlp", "6,gaussian0.7,dense5,tanh,gaussian0.5,dense3", PerUnit, Inverted),
        ("gaussian-conv", "2x5x5,gaussian0.8,conv3k3,relu,flatten,gaussian0.6,dense3", PerLayer, Inverted),
        ("alpha-selu-mlp", "6,alpha0.9,dense5,selu,alpha0.8,dense4,selu,dense3", PerUnit, Inverted),
        ("alpha-selu-conv", "2x5x5,alpha0.9,conv3k3,selu,flatten,alpha0.8,dense3", PerLayer, Inverted),
        ("dropconnect-mlp", "6,dropconnect0.7,dense5,tanh,dropconnect0.5,dense3", PerLayer, Inverted),
        ("dropconnect-mlp", "6,keep0.8,dense5,sigmoid,dropconnect0.6,dense3", PerLayer, Standard),
        ("dropconnect-conv", "2x5x5,conv3k3,relu,dropconnect0.6,flatten,dense3", PerLayer, Inverted),
        ("concrete-mlp", "6,concrete0.7,dense5,tanh,concrete0.6,dense3", PerUnit, Inverted),
        ("concrete-per-layer-t0.5-mlp", "6,concrete0.8,dense5,sigmoid,concrete0.5,dense3", PerLayer, Inverted),
        ("concrete-conv", "2x5x5,conv3k3,relu,flatten,concrete0.7,dense3", PerUnit, Inverted),
        (
            "concrete-per-channel-conv",
            "3x5x5,concrete0.8,conv2k3p1,tanh,concrete0.6,conv3k3,flatten,dense3",
            PerUnit,
            Inverted,
        ),
        ("concrete-per-layer-t0.5-conv", "2x5x5,concrete0.8,conv3k3s2,sigmoid,flatten,dense3", PerLayer, Inverted),
        ("concrete-per-channel-before-flatten", "2x4x4,conv3k3,relu,concrete0.7,flatten,dense3", PerUnit, Inverted),
    ];
    let mut cases: Vec<Case> = stacks
        .iter()
        .map(|&(name, tokens, keep, scaling)| {
            let mut c = Case::new(&format!("{name}-{scaling}-batch3"), Activation::Identity, scaling, keep, 3);
            c.tokens = Some(tokens);
            c
        })
        .collect();
    let mut eval = cases[3].clone();
    (eval.name, eval.eval) = ("conv-maxpool-eval-batch3".into(), true);
    cases.push(eval);
    let mut eval = cases[12].clone();
    (eval.name, eval.eval) = ("gaussian-mlp-eval-batch3".into(), true);
    cases.push(eval);
    let mut eval = cases[14].clone();
    (eval.name, eval.eval) = ("alpha-selu-mlp-eval-batch3".into(), true);
    cases.push(eval);
    for (from, name) in [
        (16, "dropconnect-mlp-inverted-eval-batch3"),
        (17, "dropconnect-mlp-standard-eval-batch3"),
        (19, "concrete-mlp-inverted-eval-batch3"),
    ] {
        let mut eval = cases[from].clone();
        (eval.name, eval.eval) = (name.into(), true);
        cases.push(eval);
    }
    cases
}

/// One gradient, flattened, with its tensor's name (`N.weight`, `N.bias`, `input`).
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub values: Vec<f64>,
}

/// A network, a batch and a loss: everything needed to compare backward with finite differences.
pub struct Problem {
    pub net: Network<f64>,
    pub x: Matrix<f64>,
    pub labels: Vec<usize>,
    pub values: Matrix<f64>,
    pub loss: Loss,
    pub mode: Mode,
}

impl Problem {
    /// Draw a problem for `case` from `seed`; `None` when a pre-activation of a kinked activation
    /// falls within [`KINK_MARGIN`] of the kink, or two inputs of a max-pooling window within
    /// [`TIE_MARGIN`] of each other (the caller then tries the next seed).
    pub fn draw(case: &Case, seed: u64) -> Result<Option<Self>> {
        let mut rng = StreamRng::new(seed, Stream::Gradcheck, 0, 0);
        let mut stack = match case.tokens {
            Some(tokens) => Stack::parse(tokens, case.scaling)?,
            None => {
                let layers = case.sizes.len() - 1;
                let keep: Vec<Vec<f64>> = (0..layers).map(|l| vec![if l == 0 { 0.8 } else { 0.5 }]).collect();
                Stack::mlp(&case.sizes, case.hidden, case.output, &keep, case.scaling)?
            }
        };
        if case.keep == KeepKind::PerUnit {
            // one keep per unit of the noise's input (per channel for spatial noise), the first 1
            let plans = crate::layer::plan(&stack)?;
            let shapes: Vec<_> = plans.iter().filter_map(|p| p.noise.as_ref().map(|n| (n.0.noise, n.2))).collect();
            for (spec, (kind, shape)) in stack.noises_mut().zip(shapes) {
                let n = match (kind, shape) {
                    (NoiseKind::Spatial | NoiseKind::Concrete, crate::stack::Shape::Map { c, .. }) => c,
                    _ => shape.units(),
                };
                // a concrete keep's logit needs keep < 1
                let first = if kind == NoiseKind::Concrete { 0.95 } else { 1.0 };
                spec.keep = (0..n).map(|k| if k == 0 { first } else { 0.35 + 0.6 * rng.uniform() }).collect();
            }
        }
        if case.name.starts_with("concrete-per-layer-t0.5") {
            for spec in stack.noises_mut() {
                spec.concrete = Some(ConcreteSpec { temperature: 0.5, per_layer: true });
            }
        }
        if case.name.starts_with("perchannel-map") {
            // the keep file's per-channel form on a feature map: one keep per channel, per unit noise
            for spec in stack.noises_mut() {
                spec.keep = vec![1.0, 0.6, 0.45];
            }
        }
        let hidden = stack.tokens.iter().find_map(|t| match t {
            Token::Activation { activation } => Some(*activation),
            _ => None,
        });
        let init = hidden.map_or(Init::He, Init::for_activation);
        let mut net = Network::new(&Architecture { stack, init }, seed)?;
        // coefficients large enough that the concrete regulariser's gradient is seen
        net.set_concrete_regularizer(ConcreteRegularizer { weight: 0.05, entropy: 0.03 });
        for layer in net.layers_mut() {
            if let Some((_, bias)) = layer.parameters_mut() {
                for b in bias.iter_mut() {
                    *b = 0.2 * rng.normal();
                }
            }
        }
        let (m, n_in, n_out) = (case.batch, net.inputs(), net.outputs());
        let x = Matrix::from_fn(m, n_in, |_, _| rng.normal());
        let labels = (0..m).map(|_| rng.below(n_out as u32) as usize).collect();
        // the Gaussian NLL's output holds a mean and a log-variance per target
        let targets = n_out / case.loss.outputs_per_target();
        let values = Matrix::from_fn(m, targets, |_, _| rng.uniform());
        let mode = if case.eval { Mode::Eval } else { Mode::Train { step: STEP } };
        let mut problem = Problem { net, x, labels, values, loss: case.loss, mode };
        problem.objective()?;
        Ok(if problem.near_a_kink_or_tie() { None } else { Some(problem) })
    }

    /// Whether a kinked activation's input lies near its kink, or a max-pooling window near a tie.
    fn near_a_kink_or_tie(&self) -> bool {
        let layers = self.net.layers();
        layers.iter().enumerate().any(|(l, layer)| {
            let kinked = layer
                .activation()
                .is_some_and(|(act, z)| act.has_kink_at_zero() && z.as_slice().iter().any(|z| z.abs() < KINK_MARGIN));
            let tied = match layer {
                Layer::Pool(pool) if pool.kind == PoolKind::Max => {
                    let input = if l == 0 { &self.x } else { layers[l - 1].output() };
                    pool.smallest_gap(input) < TIE_MARGIN
                }
                _ => false,
            };
            kinked || tied
        })
    }

    fn targets(&self) -> Targets<'_, f64> {
        match self.loss {
            Loss::SoftmaxCrossEntropy => Targets::Labels(&self.labels),
            _ => Targets::Values(&self.values),
        }
    }

    /// J at the current parameters and input (forward, loss and the concrete regulariser), with
    /// the loss's gradient on the output.
    fn objective_and_grad(&mut self, grad: &mut Matrix<f64>) -> Result<f64> {
        self.net.forward(&self.x, self.mode)?;
        let loss = self.loss.compute(self.net.output(), self.targets(), grad)?;
        Ok(loss + self.net.regularizer())
    }

    /// J at the current parameters and input.
    pub fn objective(&mut self) -> Result<f64> {
        self.objective_and_grad(&mut Matrix::zeros(0, 0))
    }

    /// The gradients backward computes, for every parameter tensor and the input.
    pub fn analytic(&mut self) -> Result<Vec<Tensor>> {
        let mut grad = Matrix::zeros(0, 0);
        self.objective_and_grad(&mut grad)?;
        let mut d_input = Matrix::zeros(0, 0);
        self.net.backward(&grad, Some(&mut d_input))?;
        let mut tensors: Vec<Tensor> =
            self.net.params().into_iter().map(|p| Tensor { name: p.name, values: p.grad.to_vec() }).collect();
        tensors.push(Tensor { name: "input".into(), values: d_input.as_slice().to_vec() });
        Ok(tensors)
    }

    /// Central differences `(J(θ + ε) − J(θ − ε)) / 2ε` for every parameter and input element.
    pub fn numeric(&mut self) -> Result<Vec<Tensor>> {
        let names: Vec<String> = self.net.params().into_iter().map(|p| p.name).collect();
        let mut tensors = Vec::with_capacity(names.len() + 1);
        for (index, name) in names.into_iter().enumerate() {
            let len = self.net.param_values_mut(index).len();
            let mut values = Vec::with_capacity(len);
            for e in 0..len {
                values.push(self.central_difference(|p| &mut p.net.param_values_mut(index)[e])?);
            }
            tensors.push(Tensor { name, values });
        }
        let len = self.x.as_slice().len();
        let mut values = Vec::with_capacity(len);
        for e in 0..len {
            values.push(self.central_difference(|p| &mut p.x.as_mut_slice()[e])?);
        }
        tensors.push(Tensor { name: "input".into(), values });
        Ok(tensors)
    }

    fn central_difference(&mut self, element: impl Fn(&mut Self) -> &mut f64) -> Result<f64> {
        let original = *element(self);
        *element(self) = original + EPSILON;
        let plus = self.objective()?;
        *element(self) = original - EPSILON;
        let minus = self.objective()?;
        *element(self) = original;
        Ok((plus - minus) / (2.0 * EPSILON))
    }
}

/// `‖a − n‖₂ / max(‖a‖₂ + ‖n‖₂, 1e-12)`.
pub fn relative_error(analytic: &[f64], numeric: &[f64]) -> f64 {
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    let diff = norm(&mut analytic.iter().zip(numeric).map(|(a, n)| a - n));
    let scale = norm(&mut analytic.iter().copied()) + norm(&mut numeric.iter().copied());
    diff / scale.max(1e-12)
}

/// The relative error of each tensor, matched by name.
pub fn compare(analytic: &[Tensor], numeric: &[Tensor]) -> Result<Vec<(String, f64)>> {
    analytic
        .iter()
        .map(|a| {
            let n = numeric
                .iter()
                .find(|n| n.name == a.name && n.values.len() == a.values.len())
                .ok_or_else(|| Error::Config(format!("no numeric gradient for tensor {}", a.name)))?;
            Ok((a.name.clone(), relative_error(&a.values, &n.values)))
        })
        .collect()
}

/// The outcome of one case.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CaseResult {
    pub name: String,
    pub max_rel_error: f64,
    /// The seed the case was drawn from (the first one with no pre-activation near a kink).
    pub seed: u64,
    /// Relative error per tensor, in parameter order, `input` last.
    pub tensors: Vec<(String, f64)>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.max_rel_error <= TOLERANCE
    }
}

/// Draw `case` from `seed` (or the next seeds, past problems near a kink) and compare.
pub fn run_case(case: &Case, seed: u64) -> Result<CaseResult> {
    for attempt in 0..100 {
        let Some(mut problem) = Problem::draw(case, seed + attempt)? else { continue };
        let tensors = compare(&problem.analytic()?, &problem.numeric()?)?;
        let max_rel_error = tensors.iter().map(|t| t.1).fold(0.0, f64::max);
        return Ok(CaseResult { name: case.name.clone(), max_rel_error, seed: seed + attempt, tensors });
    }
    Err(Error::Config(format!("case {}: 100 seeds from {seed} all put a pre-activation near a kink", case.name)))
}

/// Every case of [`cases`].
pub fn run_all(seed: u64) -> Result<Vec<CaseResult>> {
    cases().iter().map(|case| run_case(case, seed)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{matmul, Trans};

    #[test]
    fn every_case_passes() {
        let results = run_all(1).unwrap();
        assert!(results.len() >= 25);
        for r in &results {
            assert!(r.passed(), "{} failed: {:?}", r.name, r.tensors);
        }
    }

    /// The classic wrong backward (math.md, N1): the mask is applied to the gradient but the
    /// 1/keep factor is forgotten. Written out layer by layer with the library's own pieces.
    fn backward_forgetting_keep(p: &mut Problem) -> Vec<Tensor> {
        let mut da = Matrix::zeros(0, 0);
        p.objective_and_grad(&mut da).unwrap();
        let mut tensors = Vec::new();
        let modules: Vec<usize> = p.net.plans().iter().map(|pl| pl.module).collect();
        for (l, layer) in p.net.layers().iter().enumerate().rev() {
            let Layer::Dense(layer) = layer else { unreachable!("an MLP") };
            let mut dz = Matrix::zeros(0, 0);
            layer.activation.backward(layer.pre_activation(), layer.output(), &da, &mut dz);
            let mut dw = Matrix::zeros(layer.outputs(), layer.inputs());
            matmul(&mut dw, &dz, Trans::Yes, layer.a_tilde(), Trans::No, false).unwrap();
            let db: Vec<f64> = (0..layer.outputs()).map(|j| (0..dz.rows()).map(|i| dz.get(i, j)).sum()).collect();
            let mut da_tilde = Matrix::zeros(dz.rows(), layer.inputs());
            matmul(&mut da_tilde, &dz, Trans::No, &layer.weight, Trans::No, false).unwrap();
            // The mistake: da = da_tilde · r, without the / keep.
            let mask = layer.noise.as_ref().unwrap().mask().expect("a Bernoulli noise");
            da = Matrix::from_fn(da_tilde.rows(), da_tilde.cols(), |i, k| {
                if mask.get(i, k) {
                    da_tilde.get(i, k)
                } else {
                    0.0
                }
            });
            tensors.push(Tensor { name: format!("{}.bias", modules[l]), values: db });
            tensors.push(Tensor { name: format!("{}.weight", modules[l]), values: dw.as_slice().to_vec() });
        }
        tensors.push(Tensor { name: "input".into(), values: da.as_slice().to_vec() });
        tensors
    }

    #[test]
    fn a_backward_that_forgets_one_over_keep_fails_the_check() {
        let case = cases().into_iter().find(|c| c.name == "relu-inverted-perlayer-batch1").unwrap();
        let mut problem = (1..).find_map(|seed| Problem::draw(&case, seed).unwrap()).unwrap();
        let numeric = problem.numeric().unwrap();
        // The correct backward passes on this very problem...
        let right = compare(&problem.analytic().unwrap(), &numeric).unwrap();
        assert!(right.iter().all(|t| t.1 <= TOLERANCE), "{right:?}");
        // ...and the forum's backward fails it on every tensor below the last layer.
        let wrong = compare(&backward_forgetting_keep(&mut problem), &numeric).unwrap();
        for (name, err) in &wrong {
            if name.starts_with("7.") {
                assert!(*err <= TOLERANCE, "{name}: the last layer's gradient does not pass a mask");
            } else {
                assert!(*err > 0.1, "{name}: {err} — the check missed the forgotten 1/keep");
            }
        }
    }

    #[test]
    fn a_concrete_backward_without_its_regulariser_fails_the_check() {
        let case = cases().into_iter().find(|c| c.name == "concrete-mlp-inverted-batch3").unwrap();
        let mut problem = (1..).find_map(|seed| Problem::draw(&case, seed).unwrap()).unwrap();
        let numeric = problem.numeric().unwrap();
        // backward without the regulariser's terms, against differences of J with them
        problem.net.set_concrete_regularizer(ConcreteRegularizer::default());
        let mut grad = Matrix::zeros(0, 0);
        problem.net.forward(&problem.x, problem.mode).unwrap();
        problem.loss.compute(problem.net.output(), problem.targets(), &mut grad).unwrap();
        problem.net.backward(&grad, None).unwrap();
        let analytic: Vec<Tensor> =
            problem.net.params().into_iter().map(|p| Tensor { name: p.name, values: p.grad.to_vec() }).collect();
        let numeric: Vec<Tensor> = numeric.into_iter().filter(|t| t.name != "input").collect();
        let errors = compare(&analytic, &numeric).unwrap();
        for (name, err) in &errors {
            if name.ends_with("keep_logit") || name.ends_with("weight") {
                assert!(*err > 1e-3, "{name}: {err} — the check missed the regulariser");
            }
        }
    }

    #[test]
    fn relative_error_is_scale_free_and_guards_zero() {
        assert_eq!(relative_error(&[0.0, 0.0], &[0.0, 0.0]), 0.0);
        let e = relative_error(&[1.0, 2.0], &[1.0, 2.2]);
        assert!((relative_error(&[1e-5, 2e-5], &[1e-5, 2.2e-5]) - e).abs() < 1e-12);
    }
}
