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
//! As products: the patches `P[(i,oh,ow), (kh,kw,ci)] = x̃p[i,(oh·S+kh, ow·S+kw, ci)]` (im2col) give
//! `Z = P·Wᵀ`, `dW = dZᵀ·P`, `dP = dZ·W`, and dx̃p is dP scattered back (col2im). The weights are
//! stored `[out, (kh, kw, in)]`, the order of a patch; model files hold PyTorch's
//! `[out, in, kh, kw]`.

use super::noise::Noise;
use super::Mode;
use crate::activation::Activation;
use crate::error::{shape, Error, Result};
use crate::stack::Shape;
use crate::tensor::{matmul, matmul_then, Matrix, Scalar, Trans};
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
    /// The patches of the last forward pass, [N·OH·OW, K·K·Cin].
    patches: Matrix<T>,
    /// z and a, [N·OH·OW, Cout] between the products, [N, OH·OW·Cout] outside.
    z: Matrix<T>,
    a: Matrix<T>,
    dz: Matrix<T>,
    d_patches: Matrix<T>,
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
            patches: Matrix::default(),
            z: Matrix::default(),
            a: Matrix::default(),
            dz: Matrix::default(),
            d_patches: Matrix::default(),
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
        // the patches of every output position (the padding read as zeros)
        self.patches.ensure_shape(n * g.positions(), g.patch());
        im2col(source, &g, &mut self.patches);
        // z = P·Wᵀ + b, a = g(z), on each block of z as the product finishes it (C2, C3)
        let rows = n * g.positions();
        self.z.ensure_shape(rows, g.cout);
        self.a.ensure_shape(rows, g.cout);
        let (bias, activation) = (&self.bias, self.activation);
        let a_ptr = SharedMut(self.a.as_mut_slice().as_mut_ptr());
        let cout = g.cout;
        let epilogue = move |rows: Range<usize>, cols: Range<usize>, z: *mut T, ldz: usize| {
            for (r, i) in rows.enumerate() {
                // SAFETY: the product hands this block of z to this thread alone, and the same
                // rows and columns of a go with it.
                let (z, a) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(z.add(r * ldz), cols.len()),
                        std::slice::from_raw_parts_mut(a_ptr.get().add(i * cout + cols.start), cols.len()),
                    )
                };
                for (v, &b) in z.iter_mut().zip(&bias[cols.clone()]) {
                    *v += b;
                }
                activation.forward_rows(z, a, z.len());
            }
        };
        matmul_then(&mut self.z, &self.patches, Trans::No, &self.weight, Trans::Yes, false, Some(&epilogue), true)?;
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
        // db[co] = Σ dz[·, co] (C5), summed in row order
        let dz = &self.dz;
        self.bias_grad.iter_mut().enumerate().for_each(|(co, b)| {
            *b = (0..rows).fold(T::ZERO, |s, r| s + dz.get(r, co));
        });
        if let Some(dx) = dx {
            // dP = dz·W, then scattered back onto the padded map and cut (C6), then the noise (C7)
            self.d_patches.ensure_shape(rows, g.patch());
            matmul(&mut self.d_patches, &self.dz, Trans::No, &self.weight, Trans::No, false)?;
            let target = if self.noise.is_some() { &mut self.x_tilde } else { &mut *dx };
            target.ensure_shape(n, g.cin * g.h * g.w);
            col2im(&self.d_patches, &g, target);
            if let Some(noise) = &self.noise {
                noise.backward(&self.x_tilde, dx);
            }
        }
        // dW = dzᵀ·P (C5), and the update of each finished block
        let complete = std::sync::atomic::AtomicBool::new(true);
        let w = SharedMut(self.weight.as_mut_slice().as_mut_ptr());
        let then = update.map(|update| {
            let complete = &complete;
            move |rows: Range<usize>, cols: Range<usize>, gr: *mut T, ldg: usize| {
                if !update(rows, cols, gr, ldg, w.get()) {
                    complete.store(false, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let epilogue = then.as_ref().map(|f| f as &(dyn Fn(Range<usize>, Range<usize>, *mut T, usize) + Sync));
        let store = update.is_none();
        matmul_then(&mut self.weight_grad, &self.dz, Trans::Yes, &self.patches, Trans::No, false, epilogue, store)?;
        let units = g.positions() * g.cout;
        self.dz.reshape(n, units)?;
        Ok(complete.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// `patches[(i,oh,ow), (kh,kw,ci)] = x[i,(oh·S+kh−P, ow·S+kw−P, ci)]`, 0 in the padding; examples
/// in parallel.
fn im2col<T: Scalar>(x: &Matrix<T>, g: &Geometry, patches: &mut Matrix<T>) {
    let (per_example, patch) = (g.positions() * g.patch(), g.patch());
    let input = g.cin * g.h * g.w;
    patches.as_mut_slice().par_chunks_mut(per_example.max(1)).zip(x.as_slice().par_chunks(input.max(1))).for_each(
        |(p, x)| {
            for (pos, row) in p.chunks_mut(patch).enumerate() {
                let (oy, ox) = (pos / g.ow, pos % g.ow);
                for kh in 0..g.kernel {
                    for kw in 0..g.kernel {
                        let dst = &mut row[(kh * g.kernel + kw) * g.cin..][..g.cin];
                        match source_position(g, oy, ox, kh, kw) {
                            Some(at) => dst.copy_from_slice(&x[at * g.cin..][..g.cin]),
                            None => dst.fill(T::ZERO),
                        }
                    }
                }
            }
        },
    );
}

/// `dx[i,(h,w,ci)] = Σ dP[(i,oh,ow),(kh,kw,ci)]` over the patches that read (h, w); examples in
/// parallel, each summed in the order of its patches.
fn col2im<T: Scalar>(d_patches: &Matrix<T>, g: &Geometry, dx: &mut Matrix<T>) {
    let (per_example, patch) = (g.positions() * g.patch(), g.patch());
    let input = g.cin * g.h * g.w;
    dx.as_mut_slice().par_chunks_mut(input.max(1)).zip(d_patches.as_slice().par_chunks(per_example.max(1))).for_each(
        |(dx, p)| {
            dx.fill(T::ZERO);
            for (pos, row) in p.chunks(patch).enumerate() {
                let (oy, ox) = (pos / g.ow, pos % g.ow);
                for kh in 0..g.kernel {
                    for kw in 0..g.kernel {
                        if let Some(at) = source_position(g, oy, ox, kh, kw) {
                            let src = &row[(kh * g.kernel + kw) * g.cin..][..g.cin];
                            for (d, &s) in dx[at * g.cin..][..g.cin].iter_mut().zip(src) {
                                *d += s;
                            }
                        }
                    }
                }
            }
        },
    );
}

/// The input position `h·W + w` that filter tap (kh, kw) of output (oy, ox) reads, or `None` in the
/// padding.
#[inline]
fn source_position(g: &Geometry, oy: usize, ox: usize, kh: usize, kw: usize) -> Option<usize> {
    let h = (oy * g.stride + kh).checked_sub(g.padding).filter(|&h| h < g.h)?;
    let w = (ox * g.stride + kw).checked_sub(g.padding).filter(|&w| w < g.w)?;
    Some(h * g.w + w)
}

/// A matrix that a product's epilogues write block by block.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: each block of the matrix is written by the one thread its block of C went to.
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}
impl<T> SharedMut<T> {
    fn get(self) -> *mut T {
        self.0
    }
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
