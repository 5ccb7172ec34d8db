//! How parameter tensors are named and laid out in a model file, against how the layers store
//! them, and the architecture of dropnet's first format (an MLP) as a stack.
//!
//! Names follow `nn.Sequential`'s numbering of the stack (`N.weight`, `N.bias`, N the module of
//! the layer's token); version-1 files named them `layers.L.weight`, L counting dense layers.
//! Layouts are PyTorch's: a convolution's weight `[out, in, kh, kw]` (stored `[out, (kh, kw, in)]`),
//! and the weight of a dense layer after `flatten` with its columns in the `(c, h, w)` order of a
//! flattened `NCHW` map (stored in the `(h, w, c)` order of the channels-last map).

use crate::activation::Activation;
use crate::dropout::Scaling;
use crate::layer::{Plan, PlanKind};
use crate::stack::{NoiseKind, NoiseSpec, Shape, Stack, Token};
use serde::{Deserialize, Serialize};

/// Where each value of a tensor goes between the file and the layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Layout {
    /// The same order.
    Same,
    /// A dense weight `[rows, c·h·w]` whose input is a flattened map.
    DenseFromMap { rows: usize, c: usize, h: usize, w: usize },
    /// A convolution weight.
    Conv { cout: usize, cin: usize, k: usize },
}

impl Layout {
    /// The index in the layer's storage of the value at `f` in the file.
    fn stored_index(self, f: usize) -> usize {
        match self {
            Layout::Same => f,
            Layout::DenseFromMap { c, h, w, .. } => {
                let cols = c * h * w;
                let (row, kf) = (f / cols, f % cols);
                let (ch, y, x) = (kf / (h * w), kf / w % h, kf % w);
                row * cols + (y * w + x) * c + ch
            }
            Layout::Conv { cin, k, .. } => {
                let filter = cin * k * k;
                let (co, rem) = (f / filter, f % filter);
                let (ci, kh, kw) = (rem / (k * k), rem / k % k, rem % k);
                co * filter + (kh * k + kw) * cin + ci
            }
        }
    }

    /// The values of a tensor in the file's order.
    pub(super) fn to_file(self, stored: &[f32]) -> Vec<f32> {
        (0..stored.len()).map(|f| stored[self.stored_index(f)]).collect()
    }

    /// Put the file's values in the layer's order.
    pub(super) fn to_stored(self, file: &[f32], stored: &mut [f32]) {
        for (f, &v) in file.iter().enumerate() {
            stored[self.stored_index(f)] = v;
        }
    }
}

/// One parameter tensor as a file holds it.
#[derive(Clone, Debug)]
pub(super) struct FileTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub layout: Layout,
}

/// The parameter tensors of a network of `plans`, in parameter order (weight, then bias, of each
/// dense layer and convolution, then the keep logits of concrete dropout on its input), with
/// version-1 names when `v1`.
pub(super) fn file_tensors(plans: &[Plan], v1: bool) -> Vec<FileTensor> {
    let mut out = Vec::new();
    for (l, p) in plans.iter().filter(|p| p.file_shapes().is_some()).enumerate() {
        let (w, b) = p.file_shapes().expect("filtered");
        let layout = match &p.kind {
            PlanKind::Dense { from_map: Some(Shape::Map { c, h, w }), units } => {
                Layout::DenseFromMap { rows: *units, c: *c, h: *h, w: *w }
            }
            PlanKind::Conv(g) => Layout::Conv { cout: g.cout, cin: g.cin, k: g.kernel },
            _ => Layout::Same,
        };
        let base = if v1 { format!("layers.{l}") } else { p.module.to_string() };
        out.push(FileTensor { name: format!("{base}.weight"), shape: w, layout });
        out.push(FileTensor { name: format!("{base}.bias"), shape: b, layout: Layout::Same });
        if let Some(n) = p.keep_logits() {
            out.push(FileTensor { name: format!("{base}.keep_logit"), shape: vec![n], layout: Layout::Same });
        }
    }
    out
}

/// The `architecture` metadata of a version-2 file: the input's dimensions (`[n]` or `[c, h, w]`)
/// and the stack's tokens.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ArchJson {
    pub input: Vec<usize>,
    pub layers: Vec<Token>,
}

impl ArchJson {
    pub(super) fn of(stack: &Stack) -> Self {
        Self { input: stack.input.dims(), layers: stack.tokens.clone() }
    }

    pub(super) fn stack(self) -> Result<Stack, String> {
        let input = match self.input.as_slice() {
            [n] => Shape::Flat(*n),
            [c, h, w] => Shape::Map { c: *c, h: *h, w: *w },
            other => return Err(format!("the input has dimensions {other:?}: expected [n] or [c, h, w]")),
        };
        Ok(Stack { input, tokens: self.layers })
    }
}

/// The `architecture` metadata of a version-1 file: an MLP.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ArchV1 {
    sizes: Vec<usize>,
    activations: Vec<Activation>,
    /// Per dense layer, the keep probability of each input unit.
    keep: Vec<Vec<f64>>,
    scaling: Scaling,
}

impl ArchV1 {
    /// The same network as a stack: before every dense layer a noise token (so that noise
    /// ordinals are dense-layer indices, as the first format addressed masks), after it its
    /// activation unless that is the identity.
    pub(super) fn stack(self) -> Result<Stack, String> {
        let layers = self.sizes.len().saturating_sub(1);
        if layers == 0 || self.activations.len() != layers || self.keep.len() != layers {
            return Err(format!(
                "metadata architecture is inconsistent: {} sizes, {} activations, {} keep vectors",
                self.sizes.len(),
                self.activations.len(),
                self.keep.len()
            ));
        }
        let mut tokens = Vec::new();
        for l in 0..layers {
            // one value when the layer's units share it, as `--keep` gives it
            let keep = match self.keep[l].first() {
                Some(&p) if self.keep[l].iter().all(|&q| q == p) => vec![p],
                _ => self.keep[l].clone(),
            };
            tokens.push(Token::Noise(NoiseSpec::new(NoiseKind::Bernoulli, keep, self.scaling)));
            tokens.push(Token::Dense { units: self.sizes[l + 1] });
            if self.activations[l] != Activation::Identity {
                tokens.push(Token::Activation { activation: self.activations[l] });
            }
        }
        Ok(Stack { input: Shape::Flat(self.sizes[0]), tokens })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_and_flattened_dense_layouts_are_pytorchs() {
        // conv: stored [co, (kh, kw, ci)], file [co, ci, kh, kw]; 2 filters of 3 channels, 2x2
        let conv = Layout::Conv { cout: 2, cin: 3, k: 2 };
        let stored: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let file = conv.to_file(&stored);
        // file (co 1, ci 2, kh 0, kw 1) = index 1·12 + 2·4 + 0·2 + 1 = 21 holds stored (co 1,
        // (kh 0, kw 1, ci 2)) = 1·12 + (0·2 + 1)·3 + 2 = 17
        assert_eq!(file[21], 17.0);
        let mut back = vec![0.0; 24];
        conv.to_stored(&file, &mut back);
        assert_eq!(back, stored);
        // dense after flatten of a 2-channel 2x3 map: file column (c, h, w), stored (h, w, c)
        let dense = Layout::DenseFromMap { rows: 1, c: 2, h: 2, w: 3 };
        let stored: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let file = dense.to_file(&stored);
        // file column (c 1, h 0, w 2) = 1·6 + 0·3 + 2 = 8 holds stored (h 0, w 2, c 1) = (0·3 + 2)·2 + 1 = 5
        assert_eq!(file[8], 5.0);
    }
}
