//! The 2-D convolution: noise on its input, K×K filters with stride S and zero padding P, a bias
//! and an activation, on feature maps stored channels last (math.md, C1–C7).
//!
//! ```text
//! forward   x_tilde = noise(x)                                                  (C1)
//!           z[i,(oh,ow,co)] = Σ_{kh,kw,ci} w[co,(kh,kw,ci)] · x̃p[i,(oh·S+kh, ow·S+kw, ci)] + b[co]
//!                                           (x̃p: x_tilde padded by P zeros on every side)  (C2)
//!           a = g(z)                                                            (C3)
//! backward  dz = ∂a/∂z · da                                                     (C4)
//!           dw[co,(kh,kw,ci)] = Σ_{i,oh,ow} dz[i,(oh,ow,co)] · x̃p[i,(oh·S+kh, ow·S+kw, ci)]
//!           db[co] = Σ_{i,oh,ow} dz[i,(oh,ow,co)]                               (C5)
//!           dx̃p[i,(h,w,ci)] = Σ over (oh,ow,kh,kw) with oh·S+kh = h, ow·S+kw = w of
//!                             dz[i,(oh,ow,co)] · w[co,(kh,kw,ci)]  (then the padding cut away) (C6)
//!           dx = noise'(dx_tilde)                                               (C7)
//! ```
//!
//! As products over the patches `P[(i,oh,ow), (kh,kw,ci)] = x̃p[i,(oh·S+kh, ow·S+kw, ci)]`:
//! `Z = P·Wᵀ` and `dWᵀ = Pᵀ·dZ`, with P read in place from the padded input through offsets
//! ([`crate::gemm::gathered`]: the im2col matrix is never written), and C6 as a convolution too,
//! of the output gradient dilated by S and padded by K−1−P with the filters flipped and their
//! channels swapped: `dx[i,(h,w,ci)] = Σ_{kh,kw,co} dzq[i,(h+kh, w+kw, co)] · w[co,(K−1−kh, K−1−kw, ci)]`.
//! The weights are stored `[out, (kh, kw, in)]`, the order of a patch; model files hold
//! PyTorch's `[out, in, kh, kw]`.

use super::noise::Noise;
use super::Mode;
use crate::activation::Activation;
use crate::error::{shape, Error, Result};
use crate::gemm::gathered::{depth_product, rows_product, PackedB, TILE_COLS};
use crate::shared_ptr::SharedMut;
use crate::stack::Shape;
use crate::tensor::{Matrix, Scalar};
use rayon::prelude::*;
use std::ops::Range;

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geometry {
    /// The geometry of `cout` K×K filters with stride S and padding P over maps of `input`.
    pub fn new(input: Shape, cout: usize, kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        let Shape::Map { c: cin, h, w } = input else {
            return Err(Error::Config(format!("a convolution needs a feature map, not {input} units")));
        };
        // Sizes may come from a file: every product is checked against the limits.
        let limit = crate::limits::MAX_TENSOR_ELEMENTS;
        let too_big =
            || Error::Config(format!("a convolution of {cout} {kernel}x{kernel} filters over {input} is too large"));
        let pad2 = padding.checked_mul(2).ok_or_else(too_big)?;
        let (hp, wp) = (h.checked_add(pad2).ok_or_else(too_big)?, w.checked_add(pad2).ok_or_else(too_big)?);
        if kernel == 0 || stride == 0 || cout == 0 {
            return Err(Error::Config(
                "a convolution needs at least one filter, a kernel and a stride of 1 or more".into(),
            ));
        }
        if kernel > hp || kernel > wp {
            return Err(Error::Config(format!(
                "a {kernel}x{kernel} filter does not fit a {h}x{w} map padded by {padding}"
            )));
        }
        let (oh, ow) = ((hp - kernel) / stride + 1, (wp - kernel) / stride + 1);
        let patch = kernel.checked_mul(kernel).and_then(|k| k.checked_mul(cin)).filter(|&p| p <= limit);
        let weights = patch.and_then(|p| p.checked_mul(cout)).filter(|&n| n <= limit);
        let output =
            oh.checked_mul(ow).and_then(|p| p.checked_mul(cout)).filter(|&n| n <= crate::limits::MAX_LAYER_UNITS);
        if weights.is_none() || output.is_none() {
            return Err(too_big());
        }
        Ok(Self { cin, h, w, cout, kernel, stride, padding, oh, ow })
    }

    pub fn output(&self) -> Shape {
        Shape::Map { c: self.cout, h: self.oh, w: self.ow }
    }

    /// Values of one patch: K·K·Cin.
    pub fn patch(&self) -> usize {
        self.kernel * self.kernel * self.cin
    }

    /// Output positions of one example.
    fn positions(&self) -> usize {
        self.oh * self.ow
    }
}

/// A convolution layer and its workspaces (sized on the first batch, reused after).
#[derive(Clone, Debug)]
pub struct Conv2d<T: Scalar> {
    /// w[co, (kh, kw, ci)], shape [Cout, K·K·Cin].
    pub weight: Matrix<T>,
    pub bias: Vec<T>,
    pub weight_grad: Matrix<T>,
    pub bias_grad: Vec<T>,
    pub activation: Activation,
    pub noise: Option<Noise<T>>,
    pub geometry: Geometry,
    x_tilde: Matrix<T>,
    /// dx_tilde under concrete dropout when dx is not asked for (its keep gradient needs it).
    dx_tilde: Matrix<T>,
    /// The (noised) input of the last forward pass, zero-padded: [N, (H+2P)·(W+2P)·Cin].
    padded: Vec<T>,
    /// Filter tap t = (kh, kw, ci) at `taps[t]` in a window of `padded`.
    taps: Vec<isize>,
    /// Where the window of each output position (i, oh, ow) starts in `padded`.
    windows: Vec<isize>,
    /// The weights as the forward product reads them: b(t, co) = w[co, t].
    packed: PackedB<T>,
    /// z and a, [N·OH·OW, Cout] between the products, [N, OH·OW·Cout] outside.
    z: Matrix<T>,
    a: Matrix<T>,
    dz: Matrix<T>,
    /// The output gradient dilated by S and padded by K−1−P: [N, Hq·Wq·Cout].
    dz_dilated: Vec<T>,
    /// The flipped filters as the input-gradient product reads them, and their taps in dz_dilated.
    packed_flipped: PackedB<T>,
    taps_flipped: Vec<isize>,
    /// dz with its channels padded to a multiple of 32, when Cout is not one.
    dz_wide: Vec<T>,
    /// The weight gradient as [tap, channel] (the depth product's layout).
    grad_t: Vec<T>,
    /// The bias gradient's sum of each block of rows of dz.
    bias_partials: Vec<T>,
}

impl<T: Scalar> Conv2d<T> {
    pub fn new(
        weight: Matrix<T>,
        bias: Vec<T>,
        activation: Activation,
        noise: Option<Noise<T>>,
        geometry: Geometry,
    ) -> Result<Self> {
        let g = geometry;
        if weight.shape() != (g.cout, g.patch()) || bias.len() != g.cout {
            return Err(shape(
                "Conv2d::new",
                format!("weight is {:?}, bias {}, for {g:?}", weight.shape(), bias.len()),
            ));
        }
        if activation == Activation::Softmax {
            return Err(Error::Config("softmax after a convolution is not supported".into()));
        }
        Ok(Self {
            weight_grad: Matrix::try_zeros(g.cout, g.patch())?,
            bias_grad: vec![T::ZERO; g.cout],
            weight,
            bias,
            activation,
            noise,
            geometry,
            x_tilde: Matrix::default(),
            dx_tilde: Matrix::default(),
            padded: Vec::new(),
            taps: taps(&g, g.w + 2 * g.padding, g.cin),
            windows: Vec::new(),
            packed: PackedB::default(),
            z: Matrix::default(),
            a: Matrix::default(),
            dz: Matrix::default(),
            dz_dilated: Vec::new(),
            packed_flipped: PackedB::default(),
            taps_flipped: taps(&g, g.w + g.kernel - 1, g.cout),
            dz_wide: Vec::new(),
            grad_t: Vec::new(),
            bias_partials: Vec::new(),
        })
    }

    pub fn output(&self) -> &Matrix<T> {
        &self.a
    }

    /// The pre-activation of the last forward pass, [N, OH·OW·Cout].
    pub fn pre_activation(&self) -> &Matrix<T> {
        &self.z
    }

    /// Forward pass (C1–C3) in `mode`.
    pub fn forward(&mut self, x: &Matrix<T>, mode: Mode, seed: u64) -> Result<()> {
        let g = self.geometry;
        let input_units = g.cin * g.h * g.w;
        if x.cols() != input_units {
            return Err(shape("conv forward", format!("input has {} values, the layer takes {input_units}", x.cols())));
        }
        let n = x.rows();
        let source = match &mut self.noise {
            Some(noise) => {
                noise.forward(x, &mut self.x_tilde, mode, seed)?;
                &self.x_tilde
            }
            None => x,
        };
        let (hp, wp) = (g.h + 2 * g.padding, g.w + 2 * g.padding);
        place(source.as_slice(), n, (g.h, g.w, g.cin), (hp, wp), g.padding as isize, 1, &mut self.padded);
        let weight = &self.weight;
        self.packed.pack(g.patch(), g.cout, |t, co| weight.get(co, t));
        // z[(i,oh,ow), co] = Σ_t x̃p[window(i,oh,ow) + t] · w[co, t] + b[co], a = g(z) (C2, C3)
        let rows = n * g.positions();
        self.z.ensure_shape(rows, g.cout);
        self.a.ensure_shape(rows, g.cout);
        let (bias, activation, cout) = (&self.bias, self.activation, g.cout);
        let a_ptr = SharedMut(self.a.as_mut_slice().as_mut_ptr());
        self.windows.clear();
        self.windows.extend((0..rows).map(|m| window_start(&g, m, hp, wp)));
        let windows = &self.windows;
        let window = |m: usize| windows[m];
        let epilogue = |rows: Range<usize>, z: &mut [T]| {
            for (r, i) in rows.enumerate() {
                let z = &mut z[r * cout..(r + 1) * cout];
                // SAFETY: the product hands these rows of z to this task alone, and the same rows
                // of a go with them.
                let a = unsafe { std::slice::from_raw_parts_mut(a_ptr.get().add(i * cout), cout) };
                for (v, &b) in z.iter_mut().zip(bias) {
                    *v += b;
                }
                activation.forward_rows(z, a, cout);
            }
        };
        // SAFETY: every window lies inside `padded` (it was sized for these geometry and rows).
        unsafe {
            rows_product(self.z.as_mut_slice(), cout, rows, &self.padded, &window, &self.taps, &self.packed, &epilogue)
        };
        let units = g.positions() * g.cout;
        self.z.reshape(n, units)?;
        self.a.reshape(n, units)
    }

    /// Backward pass (C4–C7) from `da`; with `dx`, the gradient of the layer's input.
    pub fn backward(&mut self, da: &Matrix<T>, dx: Option<&mut Matrix<T>>) -> Result<()> {
        self.backward_then(da, dx, None).map(|_| ())
    }

    /// [`Conv2d::backward`], with `update` the optimizer's update of the weights made block by
    /// block while their gradient is computed (as the dense layer does). Returns whether the update
    /// is complete (false: max-norm is still to be applied).
    pub fn backward_then(
        &mut self,
        da: &Matrix<T>,
        dx: Option<&mut Matrix<T>>,
        update: Option<super::dense::WeightUpdate<'_, T>>,
    ) -> Result<bool> {
        let g = self.geometry;
        if da.shape() != self.a.shape() {
            return Err(shape(
                "conv backward",
                format!("gradient is {:?}, output is {:?}", da.shape(), self.a.shape()),
            ));
        }
        let n = da.rows();
        let rows = n * g.positions();
        // dz = ∂a/∂z · da (C4), as [N·OH·OW, Cout]
        self.activation.backward(&self.z, &self.a, da, &mut self.dz);
        self.dz.reshape(rows, g.cout)?;
        self.bias_gradient();
        // concrete dropout's keep gradient needs dx_tilde even when dx is not asked for
        let concrete = self.noise.as_ref().is_some_and(|n| n.concrete().is_some());
        if dx.is_some() || concrete {
            self.input_gradient(n, dx);
        }
        // dWᵀ[t, co] = Σ_m x̃p[window(m) + t] · dz[m, co] (C5), then w's layout and the update
        self.weight_gradient(rows);
        if let Some(decay) = self.noise.as_ref().and_then(Noise::concrete).and_then(|c| c.weight_decay()) {
            // concrete dropout's regulariser: dw[co,(kh,kw,ci)] += 2 c_w · w[co,(kh,kw,ci)] / q[ci] (N6)
            let grad = self.weight_grad.as_mut_slice().chunks_mut(decay.len());
            for (g, w) in grad.zip(self.weight.as_slice().chunks(decay.len())) {
                for ((g, &w), &d) in g.iter_mut().zip(w).zip(decay) {
                    *g += d * w;
                }
            }
        }
        let complete = match update {
            Some(update) => {
                let (g_ptr, w_ptr) = (self.weight_grad.as_slice().as_ptr(), self.weight.as_mut_slice().as_mut_ptr());
                update(0..g.cout, 0..g.patch(), g_ptr, g.patch(), w_ptr)
            }
            None => true,
        };
        self.dz.reshape(n, g.positions() * g.cout)?;
        Ok(complete)
    }

    /// db[co] = Σ_m dz[m, co] (C5): blocks of rows summed in parallel, then the blocks' sums added
    /// in block order, so the result does not depend on the number of threads.
    fn bias_gradient(&mut self) {
        const BLOCK_ROWS: usize = 512;
        let (dz, cout) = (self.dz.as_slice(), self.geometry.cout);
        self.bias_partials.resize(dz.len().div_ceil(BLOCK_ROWS * cout) * cout, T::ZERO);
        self.bias_partials.par_chunks_mut(cout).zip(dz.par_chunks(BLOCK_ROWS * cout)).for_each(|(sum, rows)| {
            sum.fill(T::ZERO);
            for row in rows.chunks_exact(cout) {
                for (s, &d) in sum.iter_mut().zip(row) {
                    *s += d;
                }
            }
        });
        self.bias_grad.fill(T::ZERO);
        for sum in self.bias_partials.chunks_exact(cout) {
            for (g, &s) in self.bias_grad.iter_mut().zip(sum) {
                *g += s;
            }
        }
    }

    /// dx (C6, C7): the flipped filters over the dilated and padded output gradient, then the
    /// input noise's backward (for concrete dropout also its keep gradient, N6). `dx` may be
    /// `None` only under concrete dropout.
    fn input_gradient(&mut self, n: usize, dx: Option<&mut Matrix<T>>) {
        let g = self.geometry;
        let q = g.kernel - 1;
        let (hq, wq) = (g.h + q, g.w + q);
        // dzq[i,(h,w,co)] = dz[i,((h−(K−1−P))/S, (w−(K−1−P))/S, co)] where that is a whole
        // position, else 0
        let shift = q as isize - g.padding as isize;
        place(self.dz.as_slice(), n, (g.oh, g.ow, g.cout), (hq, wq), shift, g.stride, &mut self.dz_dilated);
        let (weight, k, cin) = (&self.weight, g.kernel, g.cin);
        self.packed_flipped.pack(k * k * g.cout, cin, |t, ci| {
            let (kh, kw, co) = (t / (k * g.cout), t / g.cout % k, t % g.cout);
            weight.get(co, ((k - 1 - kh) * k + (k - 1 - kw)) * cin + ci)
        });
        let concrete = self.noise.as_ref().is_some_and(|n| n.concrete().is_some());
        let wants_dx = dx.is_some();
        let product = |target: &mut Matrix<T>| {
            flipped_product(&g, n, &self.dz_dilated, &self.taps_flipped, &self.packed_flipped, target)
        };
        match self.noise.as_mut() {
            // concrete dropout's backward reads x_tilde too: dx_tilde goes into dx, or into a
            // buffer of its own when dx is not asked for
            Some(noise) if concrete => {
                let target = match dx {
                    Some(dx) => dx,
                    None => &mut self.dx_tilde,
                };
                product(target);
                let c = noise.concrete_mut().expect("concrete dropout");
                c.backward_in_place(target, &self.x_tilde, &self.weight, wants_dx);
            }
            // the other noises: dx_tilde into x_tilde's buffer, then the noise's backward
            Some(noise) => {
                product(&mut self.x_tilde);
                noise.backward(&self.x_tilde, dx.expect("an input gradient is asked for"));
            }
            None => product(dx.expect("an input gradient without noise is asked for")),
        }
    }

    /// The weight gradient into `weight_grad` (w's layout), through the depth product's
    /// [tap, channel] layout.
    fn weight_gradient(&mut self, rows: usize) {
        let g = self.geometry;
        let wide = g.cout.next_multiple_of(TILE_COLS);
        let dz: &[T] = if wide == g.cout {
            self.dz.as_slice()
        } else {
            self.dz_wide.clear();
            self.dz_wide.resize(rows * wide, T::ZERO);
            for (w, d) in self.dz_wide.chunks_exact_mut(wide).zip(self.dz.as_slice().chunks_exact(g.cout)) {
                w[..g.cout].copy_from_slice(d);
            }
            &self.dz_wide
        };
        self.grad_t.resize(g.patch() * wide, T::ZERO);
        // SAFETY: every window plus tap lies inside `padded`; dz has `rows` rows of `wide`.
        unsafe {
            depth_product(&mut self.grad_t, wide, wide, &self.padded, &self.windows[..rows], &self.taps, dz, wide)
        };
        let grad_t = &self.grad_t;
        self.weight_grad.as_mut_slice().par_chunks_mut(g.patch()).enumerate().for_each(|(co, row)| {
            for (t, v) in row.iter_mut().enumerate() {
                *v = grad_t[t * wide + co];
            }
        });
    }
}

/// `dx_tilde` (C6) into `target`, [N, H·W·Cin]: the flipped filters over the dilated and padded
/// output gradient, read through their taps.
fn flipped_product<T: Scalar>(
    g: &Geometry,
    n: usize,
    dz_dilated: &[T],
    taps: &[isize],
    packed: &PackedB<T>,
    target: &mut Matrix<T>,
) {
    let q = g.kernel - 1;
    let (hq, wq) = (g.h + q, g.w + q);
    let positions = g.h * g.w;
    target.ensure_shape(n * positions, g.cin);
    let window = |m: usize| (((m / positions * hq + m % positions / g.w) * wq + m % g.w) * g.cout) as isize;
    let epilogue = |_: Range<usize>, _: &mut [T]| {};
    // SAFETY: every window lies inside `dz_dilated`, sized for these rows.
    unsafe { rows_product(target.as_mut_slice(), g.cin, n * positions, dz_dilated, &window, taps, packed, &epilogue) };
    target.reshape(n, positions * g.cin).expect("the same values");
}

/// Offsets of filter tap (kh, kw, c) in a window of a channels-last map `width` wide with
/// `channels` channels, in the order of a patch.
fn taps(g: &Geometry, width: usize, channels: usize) -> Vec<isize> {
    let k = g.kernel;
    (0..k * k * channels)
        .map(|t| (((t / (k * channels)) * width + t / channels % k) * channels + t % channels) as isize)
        .collect()
}

/// Where the window of output position m (example, oh, ow) starts in the padded input.
#[inline]
fn window_start(g: &Geometry, m: usize, hp: usize, wp: usize) -> isize {
    let positions = g.oh * g.ow;
    let (i, oy, ox) = (m / positions, m % positions / g.ow, m % g.ow);
    (((i * hp + oy * g.stride) * wp + ox * g.stride) * g.cin) as isize
}

/// `out` = the `n` maps of `x` (h × w × c each) placed at offset `offset` (negative: the first
/// rows and columns cut away) inside zero maps of hp × wp, each source row and column `dilation`
/// apart: the input padded (offset P, dilation 1) or the output gradient dilated and padded.
///
/// Only this function writes `out`, and for one geometry it writes the same positions every call:
/// the zeros between them are written when the buffer takes its size and stay, so a call of the
/// same size only copies the maps.
fn place<T: Scalar>(
    x: &[T],
    n: usize,
    (h, w, c): (usize, usize, usize),
    (hp, wp): (usize, usize),
    offset: isize,
    dilation: usize,
    out: &mut Vec<T>,
) {
    let len = n * hp * wp * c;
    if out.len() != len {
        out.clear();
        out.resize(len, T::ZERO);
    }
    out.par_chunks_mut((hp * wp * c).max(1)).zip(x.par_chunks((h * w * c).max(1))).for_each(|(o, x)| {
        for y in 0..h {
            let ty = offset + (y * dilation) as isize;
            if ty < 0 || ty as usize >= hp {
                continue;
            }
            for xx in 0..w {
                let tx = offset + (xx * dilation) as isize;
                if tx < 0 || tx as usize >= wp {
                    continue;
                }
                let at = (ty as usize * wp + tx as usize) * c;
                o[at..at + c].copy_from_slice(&x[(y * w + xx) * c..][..c]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution written as its definition (C2), for comparison.
    fn direct(x: &Matrix<f64>, w: &Matrix<f64>, b: &[f64], g: &Geometry) -> Matrix<f64> {
        Matrix::from_fn(x.rows(), g.oh * g.ow * g.cout, |i, k| {
            let (pos, co) = (k / g.cout, k % g.cout);
            let (oy, ox) = (pos / g.ow, pos % g.ow);
            let mut sum = b[co];
            for kh in 0..g.kernel {
                for kw in 0..g.kernel {
                    for ci in 0..g.cin {
                        let (h, ww) = (
                            (oy * g.stride + kh) as isize - g.padding as isize,
                            (ox * g.stride + kw) as isize - g.padding as isize,
                        );
                        if h >= 0 && ww >= 0 && (h as usize) < g.h && (ww as usize) < g.w {
                            let xv = x.get(i, (h as usize * g.w + ww as usize) * g.cin + ci);
                            sum += w.get(co, (kh * g.kernel + kw) * g.cin + ci) * xv;
                        }
                    }
                }
            }
            sum
        })
    }

    #[test]
    fn the_product_form_equals_the_definition() {
        for (stride, padding) in [(1, 0), (1, 2), (2, 1), (3, 0)] {
            let g = Geometry::new(Shape::Map { c: 3, h: 7, w: 6 }, 4, 3, stride, padding).unwrap();
            let w = Matrix::from_fn(4, g.patch(), |j, k| ((j * 7 + k * 3) % 11) as f64 / 5.0 - 1.0);
            let b = vec![0.5, -0.25, 0.0, 1.0];
            let x = Matrix::from_fn(2, 7 * 6 * 3, |i, k| ((i * 13 + k * 5) % 17) as f64 / 8.0 - 1.0);
            let mut conv = Conv2d::new(w.clone(), b.clone(), Activation::Identity, None, g).unwrap();
            conv.forward(&x, Mode::Eval, 1).unwrap();
            let expected = direct(&x, &w, &b, &g);
            assert_eq!(conv.output().shape(), expected.shape());
            for (got, want) in conv.output().as_slice().iter().zip(expected.as_slice()) {
                assert!((got - want).abs() < 1e-12, "stride {stride}, padding {padding}: {got} vs {want}");
            }
        }
    }
}
