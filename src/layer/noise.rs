//! The noise a noise token puts on the input of the module after it: Bernoulli per unit (every
//! activation its own bit, a keep probability per unit, or per channel of a feature map) or per
//! channel of a feature map (spatial). Its mask address's layer is the token's ordinal among the
//! stack's noise tokens, so that the same seed draws the same masks in any stack with the same noise
//! before it (and the MLP form draws the masks of dropnet's first model format).

use super::Mode;
use crate::dropout::{
    AlphaDropout, BitMask, ConcreteDropout, DropConnect, Dropout, GaussianDropout, Keep, MaskDraw, Scaling,
    SpatialDropout,
};
use crate::error::{Error, Result};
use crate::rng::Stream;
use crate::stack::{NoiseKind, NoiseSpec, Shape};
use crate::tensor::{Matrix, Scalar};
use std::borrow::Cow;
use std::ops::Range;

/// One noise token at run time.
#[derive(Clone, Debug)]
pub struct Noise<T: Scalar> {
    pub spec: NoiseSpec,
    /// The shape it acts on.
    pub shape: Shape,
    /// Its ordinal among the stack's noise tokens: the layer of its mask address.
    pub ordinal: u32,
    kind: Kind<T>,
}

#[derive(Clone, Debug)]
enum Kind<T: Scalar> {
    Bernoulli(Dropout<T>),
    Spatial(SpatialDropout<T>),
    Gaussian(GaussianDropout<T>),
    Alpha(AlphaDropout<T>),
    /// On the next dense layer's weights: the input passes unchanged.
    DropConnect(DropConnect<T>),
    /// Learned keep: its backward (which needs the layer's weights) is the dense layer's.
    Concrete(ConcreteDropout<T>),
}

impl<T: Scalar> Noise<T> {
    /// The noise of `spec` on inputs of `shape`. Its keep probabilities are one value, one per
    /// unit, or (on a feature map) one per channel.
    pub fn new(spec: &NoiseSpec, shape: Shape, ordinal: u32) -> Result<Self> {
        let channels = match shape {
            Shape::Map { c, .. } => Some(c),
            Shape::Flat(_) => None,
        };
        let bad = |what: String| Error::Config(format!("noise token {} (noise {ordinal}): {what}", ordinal + 1));
        let keep = &spec.keep;
        let per_unit = || {
            let units = shape.units();
            let values = match (keep.len(), channels) {
                (1, _) => vec![keep[0]; units],
                (n, _) if n == units => keep.clone(),
                (n, Some(c)) if n == c => (0..units).map(|k| keep[k % c]).collect(),
                (n, _) => {
                    return Err(bad(format!(
                        "{n} keep values for an input of {shape}: give one, one per unit{}",
                        if channels.is_some() { " or one per channel" } else { "" }
                    )))
                }
            };
            Keep::per_unit(values).map_err(|e| bad(e.to_string()))
        };
        let kind = match spec.noise {
            NoiseKind::Bernoulli => Kind::Bernoulli(Dropout::new(per_unit()?, spec.scaling)),
            kind if !kind.has_standard_convention() && spec.scaling == Scaling::Standard => {
                return Err(bad(format!("{} noise has no standard convention", kind.token())));
            }
            NoiseKind::Gaussian => Kind::Gaussian(GaussianDropout::new(per_unit()?)),
            NoiseKind::Alpha => Kind::Alpha(AlphaDropout::new(per_unit()?)),
            NoiseKind::DropConnect => match keep.as_slice() {
                [p] => Kind::DropConnect(DropConnect::new(*p, spec.scaling).map_err(|e| bad(e.to_string()))?),
                _ => return Err(bad(format!("dropconnect takes one keep probability, not {}", keep.len()))),
            },
            NoiseKind::Concrete => {
                let settings = spec.concrete.unwrap_or_default();
                // a keep per unit of a vector, per channel of a feature map
                let groups = channels.unwrap_or(shape.units());
                let d = ConcreteDropout::new(keep, shape.units(), groups, settings.temperature, settings.per_layer);
                Kind::Concrete(d.map_err(|e| bad(e.to_string()))?)
            }
            NoiseKind::Spatial => {
                let c =
                    channels.ok_or_else(|| bad(format!("spatial dropout needs a feature map, not {shape} units")))?;
                let per_channel = match keep.len() {
                    1 => vec![keep[0]; c],
                    n if n == c => keep.clone(),
                    n => return Err(bad(format!("{n} keep values for {c} channels: give one or one per channel"))),
                };
                Kind::Spatial(SpatialDropout::new(
                    Keep::per_unit(per_channel).map_err(|e| bad(e.to_string()))?,
                    spec.scaling,
                ))
            }
        };
        Ok(Self { spec: spec.clone(), shape, ordinal, kind })
    }

    /// Where the mask of this noise comes from in `mode`, or `None` in evaluation.
    pub fn draw(&self, mode: Mode, seed: u64) -> Option<MaskDraw> {
        let layer = self.ordinal;
        match mode {
            Mode::Train { step } => Some(MaskDraw { seed, stream: Stream::Mask, layer, step, first_row: 0 }),
            Mode::Eval => None,
            Mode::McSample { sample, first_row } => {
                Some(MaskDraw { seed, stream: Stream::McMask, layer, step: sample, first_row })
            }
        }
    }

    /// `a_tilde = noise(a)` in `mode`.
    pub fn forward(&mut self, a: &Matrix<T>, a_tilde: &mut Matrix<T>, mode: Mode, seed: u64) -> Result<()> {
        let draw = self.draw(mode, seed);
        match &mut self.kind {
            Kind::Bernoulli(d) => d.forward(a, a_tilde, draw.as_ref()),
            Kind::Spatial(d) => d.forward(a, a_tilde, draw.as_ref()),
            Kind::Gaussian(d) => d.forward(a, a_tilde, draw.as_ref()),
            Kind::Alpha(d) => d.forward(a, a_tilde, draw.as_ref()),
            Kind::Concrete(d) => d.forward(a, a_tilde, draw.as_ref()),
            Kind::DropConnect(_) => {
                a_tilde.ensure_shape(a.rows(), a.cols());
                a_tilde.as_mut_slice().copy_from_slice(a.as_slice());
                Ok(())
            }
        }
    }

    /// `da = ∂a_tilde/∂a · da_tilde` of the last forward pass. May run in place.
    pub fn backward(&self, da_tilde: &Matrix<T>, da: &mut Matrix<T>) {
        match &self.kind {
            Kind::Bernoulli(d) => d.backward(da_tilde, da),
            Kind::Spatial(d) => d.backward(da_tilde, da),
            Kind::Gaussian(d) => d.backward(da_tilde, da),
            Kind::Alpha(d) => d.backward(da_tilde, da),
            Kind::Concrete(_) => unreachable!("the plan puts concrete dropout only before a dense layer"),
            Kind::DropConnect(_) => {
                da.ensure_shape(da_tilde.rows(), da_tilde.cols());
                da.as_mut_slice().copy_from_slice(da_tilde.as_slice());
            }
        }
    }

    /// [`Noise::backward`] in place on a block of rows (examples) and columns (units) of `d`, for
    /// a product's epilogue.
    ///
    /// # Safety
    /// As [`Dropout::backward_block_in_place`].
    pub unsafe fn backward_block_in_place(&self, rows: Range<usize>, cols: Range<usize>, block: *mut T, ld: usize) {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            match &self.kind {
                Kind::Bernoulli(d) => d.backward_block_in_place(rows, cols, block, ld),
                Kind::Spatial(d) => d.backward_block_in_place(rows, cols, block, ld),
                Kind::Gaussian(d) => d.backward_block_in_place(rows, cols, block, ld),
                Kind::Alpha(d) => d.backward_block_in_place(rows, cols, block, ld),
                Kind::DropConnect(_) => {}
                Kind::Concrete(_) => unreachable!("the dense layer runs concrete dropout's backward"),
            }
        }
    }

    /// The keep probabilities, per unit (Bernoulli) or per channel (spatial); for concrete
    /// dropout the learned ones, σ(θ), per unit of a vector or per channel of a map.
    pub fn keep(&self) -> Cow<'_, Keep> {
        match &self.kind {
            Kind::Bernoulli(d) => Cow::Borrowed(d.keep()),
            Kind::Spatial(d) => Cow::Borrowed(d.keep()),
            Kind::Gaussian(d) => Cow::Borrowed(d.keep()),
            Kind::Alpha(d) => Cow::Borrowed(d.keep()),
            Kind::DropConnect(d) => Cow::Borrowed(d.keep()),
            // Keep::per_unit refuses 0; a learned keep that underflowed shows as the smallest
            // positive value rather than failing a summary
            Kind::Concrete(d) => Cow::Owned(
                Keep::per_unit(d.keep_values().into_iter().map(|q| q.max(f64::MIN_POSITIVE)).collect())
                    .expect("σ(θ) lies in (0, 1]"),
            ),
        }
    }

    pub fn scaling(&self) -> Scaling {
        self.spec.scaling
    }

    /// The bits of the last masked pass (`rows × units`, or `rows × channels` for spatial).
    /// `None` for Gaussian noise, which has factors, not bits.
    pub fn mask(&self) -> Option<&BitMask> {
        match &self.kind {
            Kind::Bernoulli(d) => Some(d.mask()),
            Kind::Spatial(d) => Some(d.mask()),
            Kind::Alpha(d) => Some(d.mask()),
            Kind::DropConnect(d) => d.mask(),
            Kind::Gaussian(_) | Kind::Concrete(_) => None,
        }
    }

    /// The per-unit dropout, for callers that set a fixed mask (tests).
    pub fn bernoulli_mut(&mut self) -> Option<&mut Dropout<T>> {
        match &mut self.kind {
            Kind::Bernoulli(d) => Some(d),
            _ => None,
        }
    }

    /// The spatial dropout, for the convolution's input-gradient epilogue.
    pub fn spatial(&self) -> Option<&SpatialDropout<T>> {
        match &self.kind {
            Kind::Spatial(d) => Some(d),
            _ => None,
        }
    }

    /// The weights a dense layer under DropConnect uses in `mode` (a fresh mask, or the expected
    /// weights in evaluation); `None` for noise on the input.
    pub fn masked_weights(&mut self, w: &Matrix<T>, mode: Mode, seed: u64) -> Result<Option<&Matrix<T>>> {
        let draw = self.draw(mode, seed);
        match &mut self.kind {
            Kind::DropConnect(d) => d.weights(w, draw.as_ref()).map(Some),
            _ => Ok(None),
        }
    }

    /// The concrete dropout, for its dense layer's backward.
    pub fn concrete(&self) -> Option<&ConcreteDropout<T>> {
        match &self.kind {
            Kind::Concrete(d) => Some(d),
            _ => None,
        }
    }

    pub fn concrete_mut(&mut self) -> Option<&mut ConcreteDropout<T>> {
        match &mut self.kind {
            Kind::Concrete(d) => Some(d),
            _ => None,
        }
    }

    /// The DropConnect of a dense layer's weights.
    pub fn dropconnect(&self) -> Option<&DropConnect<T>> {
        match &self.kind {
            Kind::DropConnect(d) => Some(d),
            _ => None,
        }
    }

    /// The Gaussian dropout, for the convolution's input-gradient epilogue.
    pub fn gaussian(&self) -> Option<&GaussianDropout<T>> {
        match &self.kind {
            Kind::Gaussian(d) => Some(d),
            _ => None,
        }
    }

    /// The per-unit dropout, for the convolution's input-gradient epilogue.
    pub fn bernoulli(&self) -> Option<&Dropout<T>> {
        match &self.kind {
            Kind::Bernoulli(d) => Some(d),
            _ => None,
        }
    }
}
