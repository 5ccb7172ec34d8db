//! The description of a network as users write it: an input shape and a list of tokens, one module
//! each (`--arch` and the `arch` key of a recipe, comma-separated, input first):
//!
//! ```text
//! input      784 (flat features) or 1x28x28 (channels x height x width)
//! layers     denseN   convCkK[sS][pP]   maxpoolK[sS]   avgpoolK[sS]   flatten
//! activation relu leakyrelu tanh sigmoid softmax elu selu gelu   (after a layer; none: linear)
//! noise      keepP (Bernoulli per unit)   spatialP (Bernoulli per channel of a feature map)
//!            gaussianP   alphaP   dropconnectP   concreteP (keep learned, starting at P)
//! ```
//!
//! e.g. `1x28x28,conv32k5p2,relu,maxpool2,flatten,keep0.5,dense10`. A noise token acts on the input
//! of the module after it. The MLP form `784-1024-10` with `--keep` and `--activation` denotes the
//! equivalent stack ([`Stack::mlp`]). The tokens are also what a model file stores, as JSON
//! ([`Token`]), and what the tensor names count: token i (from 0, the input not counted) is module
//! i of the equivalent PyTorch `nn.Sequential`.

use crate::activation::Activation;
use crate::dropout::Scaling;
use crate::error::{shorten, Error, Result, QUOTE_CHARS};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The shape of one example's activations: a vector of units, or a feature map stored channels
/// last (row-major height x width x channels: unit `(h·W + w)·C + c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Shape {
    Flat(usize),
    Map { c: usize, h: usize, w: usize },
}

impl Shape {
    /// Values per example (saturating: a shape read from a file may be absurd, and the limits it
    /// is checked against are far below `usize::MAX`).
    pub fn units(self) -> usize {
        match self {
            Shape::Flat(n) => n,
            Shape::Map { c, h, w } => c.saturating_mul(h).saturating_mul(w),
        }
    }

    /// `[n]` or `[c, h, w]` (PyTorch's order, for JSON and messages).
    pub fn dims(self) -> Vec<usize> {
        match self {
            Shape::Flat(n) => vec![n],
            Shape::Map { c, h, w } => vec![c, h, w],
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Flat(n) => write!(f, "{n}"),
            Shape::Map { c, h, w } => write!(f, "{c}x{h}x{w}"),
        }
    }
}

/// Which noise a noise token draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseKind {
    /// `keepP`: a Bernoulli bit per unit (per activation of a feature map).
    Bernoulli,
    /// `spatialP`: a Bernoulli bit per channel of a feature map, shared by its positions.
    Spatial,
    /// `gaussianP`: multiplicative noise `N(1, (1 − P)/P)` per unit (Srivastava et al. 2014, §10).
    Gaussian,
    /// `alphaP`: alpha dropout for SELU networks (Klambauer et al. 2017).
    Alpha,
    /// `dropconnectP`: a Bernoulli mask on the next dense layer's weights (Wan et al. 2013).
    DropConnect,
    /// `concreteP`: Bernoulli dropout whose keep probabilities are trained through a relaxed
    /// Bernoulli (Gal, Hron & Kendall 2017), starting at P.
    Concrete,
}

impl NoiseKind {
    /// The token's name, before its keep probability.
    pub fn token(self) -> &'static str {
        match self {
            NoiseKind::Bernoulli => "keep",
            NoiseKind::Spatial => "spatial",
            NoiseKind::Gaussian => "gaussian",
            NoiseKind::Alpha => "alpha",
            NoiseKind::DropConnect => "dropconnect",
            NoiseKind::Concrete => "concrete",
        }
    }

    /// The kind's name in messages and reports (`bernoulli` for `keepP`).
    pub fn token_name(self) -> &'static str {
        match self {
            NoiseKind::Bernoulli => "bernoulli",
            other => other.token(),
        }
    }

    /// Whether the kind has the standard convention (no scaling in training, ×keep in
    /// evaluation): only the Bernoulli kinds.
    pub fn has_standard_convention(self) -> bool {
        matches!(self, NoiseKind::Bernoulli | NoiseKind::Spatial | NoiseKind::DropConnect)
    }
}

/// A noise token: its kind, keep probabilities (one for all, or one per unit or per channel) and
/// scaling convention, and for concrete dropout the settings of its relaxation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseSpec {
    pub noise: NoiseKind,
    pub keep: Vec<f64>,
    pub scaling: Scaling,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concrete: Option<ConcreteSpec>,
}

impl NoiseSpec {
    /// A noise of `noise` kind with these keep probabilities (concrete: the default relaxation).
    pub fn new(noise: NoiseKind, keep: Vec<f64>, scaling: Scaling) -> Self {
        let concrete = (noise == NoiseKind::Concrete).then(ConcreteSpec::default);
        Self { noise, keep, scaling, concrete }
    }
}

/// How a concrete dropout token learns its keep probabilities (`--concrete-temperature`,
/// `--concrete-per`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcreteSpec {
    /// t of the relaxed Bernoulli σ((θ + L)/t).
    pub temperature: f64,
    /// One keep probability for all the input's units instead of one per unit.
    pub per_layer: bool,
}

impl ConcreteSpec {
    /// The temperature of Gal, Hron & Kendall 2017.
    pub const TEMPERATURE: f64 = 0.1;
}

impl Default for ConcreteSpec {
    fn default() -> Self {
        Self { temperature: Self::TEMPERATURE, per_layer: false }
    }
}

/// One module of the stack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Token {
    Dense { units: usize },
    Conv { channels: usize, kernel: usize, stride: usize, padding: usize },
    MaxPool { kernel: usize, stride: usize },
    AvgPool { kernel: usize, stride: usize },
    Flatten,
    Activation { activation: Activation },
    Noise(NoiseSpec),
}

impl Token {
    /// The token as `--arch` spells it (keep probabilities other than a single one print as `keep*`,
    /// given per unit or per channel).
    pub fn text(&self) -> String {
        match self {
            Token::Dense { units } => format!("dense{units}"),
            Token::Conv { channels, kernel, stride, padding } => {
                let mut t = format!("conv{channels}k{kernel}");
                if *stride != 1 {
                    t.push_str(&format!("s{stride}"));
                }
                if *padding != 0 {
                    t.push_str(&format!("p{padding}"));
                }
                t
            }
            Token::MaxPool { kernel, stride } | Token::AvgPool { kernel, stride } => {
                let name = if matches!(self, Token::MaxPool { .. }) { "maxpool" } else { "avgpool" };
                if stride == kernel {
                    format!("{name}{kernel}")
                } else {
                    format!("{name}{kernel}s{stride}")
                }
            }
            Token::Flatten => "flatten".into(),
            Token::Activation { activation } => activation.name().replace('-', ""),
            Token::Noise(n) => {
                let name = n.noise.token();
                match n.keep.as_slice() {
                    [p] => format!("{name}{p}"),
                    _ => format!("{name}*"),
                }
            }
        }
    }

    /// Parse one token (not the input).
    pub fn parse(text: &str, scaling: Scaling) -> Result<Self> {
        let bad = |why: &str| Error::Config(format!("token '{}': {why}", shorten(text, QUOTE_CHARS)));
        let number = |digits: &str| digits.parse::<usize>().ok().filter(|&n| n > 0);
        if let Some(rest) = text.strip_prefix("dense") {
            return number(rest).map(|units| Token::Dense { units }).ok_or_else(|| bad("expected denseN, N ≥ 1"));
        }
        if let Some(rest) = text.strip_prefix("conv") {
            return parse_conv(rest).ok_or_else(|| bad("expected convCkK[sS][pP], e.g. conv32k5p2"));
        }
        for (name, max) in [("maxpool", true), ("avgpool", false)] {
            if let Some(rest) = text.strip_prefix(name) {
                let (kernel, stride) =
                    parse_pool(rest).ok_or_else(|| bad(&format!("expected {name}K[sS], e.g. {name}2")))?;
                return Ok(if max { Token::MaxPool { kernel, stride } } else { Token::AvgPool { kernel, stride } });
            }
        }
        if text == "flatten" {
            return Ok(Token::Flatten);
        }
        let kinds = [
            NoiseKind::DropConnect,
            NoiseKind::Bernoulli,
            NoiseKind::Spatial,
            NoiseKind::Gaussian,
            NoiseKind::Alpha,
            NoiseKind::Concrete,
        ];
        for kind in kinds {
            let name = kind.token();
            if let Some(rest) = text.strip_prefix(name) {
                let p: f64 = rest.parse().map_err(|_| bad(&format!("expected {name}P with a keep probability P")))?;
                crate::dropout::Keep::uniform(p, 1).map_err(|e| bad(&e.to_string()))?;
                if !kind.has_standard_convention() && scaling == Scaling::Standard {
                    return Err(bad(&format!(
                        "{name} noise has no standard convention (its training output already has the \
                         evaluation mean): drop --scaling standard"
                    )));
                }
                return Ok(Token::Noise(NoiseSpec::new(kind, vec![p], scaling)));
            }
        }
        let activation = match text {
            "leakyrelu" => Some(Activation::LeakyRelu),
            "identity" | "linear" => None,
            other => other.parse::<Activation>().ok(),
        };
        match activation {
            Some(activation) => Ok(Token::Activation { activation }),
            None => Err(bad("not a layer, activation or noise (see dropnet train --help)")),
        }
    }
}

/// `CkK[sS][pP]` after `conv`.
fn parse_conv(rest: &str) -> Option<Token> {
    let (channels, rest) = rest.split_once('k')?;
    let (rest, padding) = match rest.split_once('p') {
        Some((r, p)) => (r, p.parse().ok()?),
        None => (rest, 0),
    };
    let (kernel, stride) = match rest.split_once('s') {
        Some((k, s)) => (k, s.parse().ok()?),
        None => (rest, 1),
    };
    let (channels, kernel) = (channels.parse().ok()?, kernel.parse().ok()?);
    (channels > 0 && kernel > 0 && stride > 0).then_some(Token::Conv { channels, kernel, stride, padding })
}

/// `K[sS]` after `maxpool` or `avgpool`: kernel and stride (default the kernel).
fn parse_pool(rest: &str) -> Option<(usize, usize)> {
    let (kernel, stride) = match rest.split_once('s') {
        Some((k, s)) => (k.parse().ok()?, s.parse().ok()?),
        None => {
            let k = rest.parse().ok()?;
            (k, k)
        }
    };
    (kernel > 0 && stride > 0).then_some((kernel, stride))
}

/// A whole stack: the input shape and the tokens after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    pub input: Shape,
    pub tokens: Vec<Token>,
}

impl Stack {
    /// Parse `--arch`: the token form (`784,dense10`, `1x28x28,conv8k3,...`) or the MLP form
    /// (`784-1024-10`, which needs `mlp` to say its activation and keep probabilities).
    pub fn parse(text: &str, scaling: Scaling) -> Result<Self> {
        let mut parts = text.split(',').map(str::trim);
        let input_text = parts.next().unwrap_or("");
        let input = parse_input(input_text).ok_or_else(|| {
            Error::Config(format!(
                "'{}': the first token must be the input, 784 or 1x28x28",
                shorten(text, QUOTE_CHARS)
            ))
        })?;
        let tokens = parts.map(|t| Token::parse(t, scaling)).collect::<Result<Vec<_>>>()?;
        Ok(Self { input, tokens })
    }

    /// The MLP `sizes[0] → … → sizes[L]`: before each dense layer a Bernoulli noise token with
    /// `keep[l]` (given for every dense layer, so that noise ordinals equal dense-layer indices, as
    /// in dropnet's first model format), `hidden` after every dense layer but the last.
    pub fn mlp(
        sizes: &[usize],
        hidden: Activation,
        output: Activation,
        keep: &[Vec<f64>],
        scaling: Scaling,
    ) -> Result<Self> {
        let layers = sizes.len().saturating_sub(1);
        if layers == 0 || keep.len() != layers {
            return Err(Error::Config(format!("{} keep vectors for {layers} dense layers", keep.len())));
        }
        let mut tokens = Vec::new();
        for l in 0..layers {
            // one value when the layer's units share it
            let keep = match keep[l].first() {
                Some(&p) if keep[l].iter().all(|&q| q == p) => vec![p],
                _ => keep[l].clone(),
            };
            tokens.push(Token::Noise(NoiseSpec::new(NoiseKind::Bernoulli, keep, scaling)));
            tokens.push(Token::Dense { units: sizes[l + 1] });
            let activation = if l + 1 == layers { output } else { hidden };
            if activation != Activation::Identity {
                tokens.push(Token::Activation { activation });
            }
        }
        Ok(Self { input: Shape::Flat(sizes[0]), tokens })
    }

    /// The noise tokens, in order.
    pub fn noises_mut(&mut self) -> impl Iterator<Item = &mut NoiseSpec> {
        self.tokens.iter_mut().filter_map(|t| match t {
            Token::Noise(n) => Some(n),
            _ => None,
        })
    }

    /// `--arch` text of the stack.
    pub fn text(&self) -> String {
        std::iter::once(self.input.to_string()).chain(self.tokens.iter().map(Token::text)).collect::<Vec<_>>().join(",")
    }
}

/// `784` or `1x28x28`.
fn parse_input(text: &str) -> Option<Shape> {
    let dims: Vec<usize> = text.split('x').map(|d| d.parse().ok().filter(|&n| n > 0)).collect::<Option<_>>()?;
    match dims.as_slice() {
        [n] => Some(Shape::Flat(*n)),
        [c, h, w] => Some(Shape::Map { c: *c, h: *h, w: *w }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses_and_prints_back() {
        let text =
            "1x28x28,conv32k5p2,relu,maxpool2,conv64k5p2,relu,maxpool2,flatten,keep0.5,dense1024,relu,keep0.5,dense10";
        let stack = Stack::parse(text, Scaling::Inverted).unwrap();
        assert_eq!(stack.input, Shape::Map { c: 1, h: 28, w: 28 });
        assert_eq!(stack.tokens.len(), 12);
        assert_eq!(stack.tokens[0], Token::Conv { channels: 32, kernel: 5, stride: 1, padding: 2 });
        assert_eq!(stack.tokens[2], Token::MaxPool { kernel: 2, stride: 2 });
        assert_eq!(stack.text(), text);
        let odd = Stack::parse("3x8x8,conv4k3s2,avgpool3s1,spatial0.9,leakyrelu", Scaling::Standard).unwrap();
        assert_eq!(odd.text(), "3x8x8,conv4k3s2,avgpool3s1,spatial0.9,leakyrelu");
    }

    #[test]
    fn bad_tokens_are_named() {
        for (text, expected) in [
            ("784,dense0", "'dense0'"),
            ("784,conv3", "convCkK"),
            ("784,keep1.5", "outside (0, 1]"),
            ("784,concrete1.5", "outside (0, 1]"),
            ("784,swish", "'swish'"),
            ("28x28,dense3", "the first token must be the input"),
        ] {
            let err = Stack::parse(text, Scaling::Inverted).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn the_mlp_form_is_a_stack_with_a_noise_before_every_dense_layer() {
        let keep = vec![vec![0.8; 4], vec![0.5, 0.6, 0.7]];
        let stack = Stack::mlp(&[4, 3, 2], Activation::Relu, Activation::Identity, &keep, Scaling::Inverted).unwrap();
        assert_eq!(stack.text(), "4,keep0.8,dense3,relu,keep*,dense2");
        assert_eq!(stack.tokens.len(), 5);
        // and a model file stores it as JSON that reads back
        let json = serde_json::to_string(&stack).unwrap();
        assert_eq!(serde_json::from_str::<Stack>(&json).unwrap(), stack);
    }
}
