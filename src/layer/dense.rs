//! The dense layer: noise on its input (dropout), an affine map, an activation
//! (math.md, D1–D7).
//!
//! ```text
//! forward   a_tilde[i,k] = r[i,k] / keep[k] · a[i,k]
//!           z[i,j]       = Σ_k w[j,k] a_tilde[i,k] + b[j]        (z = ã·Wᵀ + b, W stored [out, in])
//!           a_next[i,:]  = g(z[i,:])
//! backward  dz[i,j]       = Σ_jj da_next[i,jj] ∂a_next[i,jj]/∂z[i,j]
//!           dw[j,k]       = Σ_i dz[i,j] a_tilde[i,k]              (dW = dzᵀ·ã)
//!           db[j]         = Σ_i dz[i,j]
//!           da_tilde[i,k] = Σ_j dz[i,j] w[j,k]                    (dã = dz·W)
//!           da[i,k]       = da_tilde[i,k] · r[i,k] / keep[k]
//! ```
//!
//! Under DropConnect (`dropconnectP` before the layer) the input passes unchanged and W is
//! replaced by the masked weights `s·M ⊙ W` in both products, with `dW = (dzᵀ·ã) ⊙ s·M` (math.md
//! N5, `crate::dropout::DropConnect`). Under concrete dropout (`concreteP`) the layer also fills
//! the keep logits' gradient from dã, and adds the regulariser's `2 c_w·W[j,k]/q[k]` to dW (math.md
//! N6, `crate::dropout::ConcreteDropout`).

use super::noise::Noise;
use super::Mode;
use crate::activation::Activation;
use crate::error::{shape, Result};
use crate::shared_ptr::SharedMut;
use crate::tensor::{matmul, matmul_then, Matrix, Scalar, Trans};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

/// A dense layer with optional noise on its input. The workspaces (`a_tilde`, `z`, `a`, `dz`) are
/// sized on the first batch and reused for every later batch of the same size.
#[derive(Clone, Debug)]
pub struct Dense<T: Scalar> {
    /// w[j,k]: row j holds unit j's incoming weights, shape [out, in] (as PyTorch's nn.Linear).
    pub weight: Matrix<T>,
    /// b[j], shape [out].
    pub bias: Vec<T>,
    /// ∂J/∂w, filled by backward.
    pub weight_grad: Matrix<T>,
    /// ∂J/∂b, filled by backward.
    pub bias_grad: Vec<T>,
    pub activation: Activation,
    /// The noise on this layer's input a, if any.
    pub noise: Option<Noise<T>>,
    /// The (noised) input of the last forward pass: ã, kept for the weight gradient.
    a_tilde: Matrix<T>,
    z: Matrix<T>,
    a: Matrix<T>,
    dz: Matrix<T>,
    /// dã when no input gradient is asked for but concrete dropout needs it.
    da_tilde: Matrix<T>,
}

impl<T: Scalar> Dense<T> {
    /// A layer with the given weights [out, in], biases [out], activation and input noise.
    pub fn new(weight: Matrix<T>, bias: Vec<T>, activation: Activation, noise: Option<Noise<T>>) -> Result<Self> {
        let (out, inp) = weight.shape();
        let noise_units = noise.as_ref().map_or(inp, |n| n.shape.units());
        if bias.len() != out || noise_units != inp {
            return Err(shape(
                "Dense::new",
                format!("weight is {out}x{inp}, bias has {} values, the input noise acts on {noise_units}", bias.len()),
            ));
        }
        Ok(Self {
            weight_grad: Matrix::try_zeros(out, inp)?,
            bias_grad: vec![T::ZERO; out],
            weight,
            bias,
            activation,
            noise,
            a_tilde: Matrix::zeros(0, inp),
            z: Matrix::zeros(0, out),
            a: Matrix::zeros(0, out),
            dz: Matrix::zeros(0, out),
            da_tilde: Matrix::zeros(0, 0),
        })
    }

    pub fn inputs(&self) -> usize {
        self.weight.cols()
    }

    pub fn outputs(&self) -> usize {
        self.weight.rows()
    }

    /// The layer's output a_next = g(z) of the last forward pass.
    pub fn output(&self) -> &Matrix<T> {
        &self.a
    }

    /// The pre-activation z of the last forward pass.
    pub fn pre_activation(&self) -> &Matrix<T> {
        &self.z
    }

    /// The dropped-out input ã of the last forward pass.
    pub fn a_tilde(&self) -> &Matrix<T> {
        &self.a_tilde
    }

    /// Forward pass in `mode` (its noise's mask address from `seed`). The result is
    /// [`Dense::output`].
    pub fn forward(&mut self, a: &Matrix<T>, mode: Mode, seed: u64) -> Result<()> {
        if a.cols() != self.inputs() {
            return Err(shape("dense forward", format!("input has {} units, layer takes {}", a.cols(), self.inputs())));
        }
        let m = a.rows();
        // a_tilde[i,k] = r[i,k]/keep[k] · a[i,k]  (D1), or a itself without noise
        match &mut self.noise {
            Some(noise) => noise.forward(a, &mut self.a_tilde, mode, seed)?,
            None => {
                self.a_tilde.ensure_shape(a.rows(), a.cols());
                self.a_tilde.as_mut_slice().copy_from_slice(a.as_slice());
            }
        }
        let outputs = self.outputs();
        // the weights of this pass: W, or under DropConnect s·M ⊙ W with this step's mask (N5)
        let masked = match self.noise.as_mut() {
            Some(noise) => noise.masked_weights(&self.weight, mode, seed)?,
            None => None,
        };
        let weight = masked.unwrap_or(&self.weight);
        // z[i,j] = Σ_k a_tilde[i,k] w[j,k]  (+ b[j] below; D2); the product reads W transposed
        // while packing it
        self.z.ensure_shape(m, outputs);
        self.a.ensure_shape(m, outputs);
        if self.activation == Activation::Softmax {
            matmul(&mut self.z, &self.a_tilde, Trans::No, weight, Trans::Yes, false)?;
            // z[i,j] += b[j]; a_next[i,:] = softmax(z[i,:])  (D2, D3), which needs whole rows
            bias_activate(&self.bias, self.activation, &mut self.z, &mut self.a);
            return Ok(());
        }
        // z[i,j] += b[j]; a_next[i,j] = g(z[i,j])  (D2, D3), on each block of z as the product
        // finishes it
        let (bias, activation, width) = (&self.bias, self.activation, outputs);
        let a_next = SharedMut(self.a.as_mut_slice().as_mut_ptr());
        let epilogue = move |rows: Range<usize>, cols: Range<usize>, z: *mut T, ldz: usize| {
            for (r, i) in rows.enumerate() {
                // SAFETY: the product hands this block of z (row stride ldz) to this thread alone,
                // and the same rows and columns of a_next (row stride width) go with it.
                let (z, a) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(z.add(r * ldz), cols.len()),
                        std::slice::from_raw_parts_mut(a_next.get().add(i * width + cols.start), cols.len()),
                    )
                };
                bias_activate_row(&bias[cols.clone()], activation, z, a);
            }
        };
        matmul_then(&mut self.z, &self.a_tilde, Trans::No, weight, Trans::Yes, false, Some(&epilogue), true)
    }

    /// Backward pass from `da` = ∂J/∂a_next. Fills the parameter gradients and, when `da_in` is
    /// given, ∂J/∂a of this layer's input.
    pub fn backward(&mut self, da: &Matrix<T>, da_in: Option<&mut Matrix<T>>) -> Result<()> {
        self.backward_then(da, da_in, None).map(|_| ())
    }

    /// [`Dense::backward`], and with `update` the optimizer's update of the weights made while
    /// their gradient is computed, block by block as the product finishes it. The weight gradient
    /// then exists only block by block, for the update: `weight_grad` does not hold it afterwards.
    /// Returns whether the update, max-norm included, is complete (false: max-norm is still to be
    /// applied to the weights).
    pub fn backward_then(
        &mut self,
        da: &Matrix<T>,
        da_in: Option<&mut Matrix<T>>,
        update: Option<WeightUpdate<T>>,
    ) -> Result<bool> {
        if da.shape() != self.a.shape() {
            return Err(shape(
                "dense backward",
                format!("gradient is {}x{}, output is {}x{}", da.rows(), da.cols(), self.a.rows(), self.a.cols()),
            ));
        }
        // dz[i,j] = Σ_jj da_next[i,jj] ∂a_next[i,jj]/∂z[i,j]  (D4)
        self.activation.backward(&self.z, &self.a, da, &mut self.dz);
        // db[j] = Σ_i dz[i,j]  (D5; column blocks in parallel, each column summed in row order)
        let dz = &self.dz;
        self.bias_grad.par_chunks_mut(64).enumerate().for_each(|(block, db)| {
            db.fill(T::ZERO);
            for i in 0..dz.rows() {
                for (g, &d) in db.iter_mut().zip(&dz.row(i)[block * 64..]) {
                    *g += d;
                }
            }
        });
        let concrete = self.noise.as_ref().is_some_and(|n| n.concrete().is_some());
        let wants_input_grad = da_in.is_some();
        let inputs = self.inputs();
        if wants_input_grad || concrete {
            // da_tilde[i,k] = Σ_j dz[i,j] w[j,k]  (D6; before the weights are updated below)
            let target = match da_in {
                Some(d) => d,
                None => &mut self.da_tilde,
            };
            target.ensure_shape(self.dz.rows(), inputs);
            let noise = self.noise.as_ref().filter(|_| !concrete);
            // da[i,k] = da_tilde[i,k] · r[i,k] / keep[k]  (D7), on each block of da_tilde as the
            // product finishes it
            let epilogue = |rows: Range<usize>, cols: Range<usize>, d: *mut T, ld: usize| {
                if let Some(noise) = noise {
                    // SAFETY: the product hands this block of da_in to this thread alone.
                    unsafe { noise.backward_block_in_place(rows, cols, d, ld) }
                }
            };
            let epilogue =
                noise.is_some().then_some(&epilogue as &(dyn Fn(Range<usize>, Range<usize>, *mut T, usize) + Sync));
            // under DropConnect, the masked weights of the forward pass (N5)
            let weight = noise.and_then(Noise::dropconnect).map_or(&self.weight, |d| d.weight());
            matmul_then(target, &self.dz, Trans::No, weight, Trans::No, false, epilogue, true)?;
            if let Some(c) = self.noise.as_mut().and_then(Noise::concrete_mut) {
                // dθ and da of concrete dropout, with the regulariser's dθ (N6)
                c.backward_in_place(target, &self.a_tilde, &self.weight, wants_input_grad);
            }
        }
        // dw[j,k] = Σ_i dz[i,j] a_tilde[i,k]  (D5), under DropConnect times s·M[j,k] (N5), and the
        // update of each finished block of w
        let complete = AtomicBool::new(true);
        let complete_ref = &complete;
        let w = SharedMut(self.weight.as_mut_slice().as_mut_ptr());
        let connect = self.noise.as_ref().and_then(Noise::dropconnect);
        // concrete dropout's regulariser: dw[j,k] += 2 c_w · w[j,k] / q[k]  (N6)
        let decay = self.noise.as_ref().and_then(Noise::concrete).and_then(|c| c.weight_decay());
        let then = move |rows: Range<usize>, cols: Range<usize>, g: *mut T, ldg: usize| {
            if let Some(connect) = connect {
                // SAFETY: the product hands this block of the gradient to this thread alone.
                unsafe { connect.mask_gradient_block(rows.clone(), cols.clone(), g, ldg) };
            }
            if let Some(decay) = decay {
                // SAFETY: as above; the same block of w is read before its update below.
                unsafe { add_weight_decay_block(rows.clone(), cols.clone(), g, ldg, w.get(), inputs, decay) };
            }
            if let Some(update) = update {
                if !update(rows, cols, g, ldg, w.get()) {
                    complete_ref.store(false, Ordering::Relaxed);
                }
            }
        };
        let epilogue = (update.is_some() || connect.is_some() || decay.is_some())
            .then_some(&then as &(dyn Fn(Range<usize>, Range<usize>, *mut T, usize) + Sync));
        // with an update, the gradient is needed only by it (store_c = false)
        let store = update.is_none();
        matmul_then(&mut self.weight_grad, &self.dz, Trans::Yes, &self.a_tilde, Trans::No, false, epilogue, store)?;
        Ok(complete.load(Ordering::Relaxed))
    }
}

/// `g[j,k] += decay[k mod groups] · w[j,k]` on a block of the weight gradient (`w` the whole
/// matrix, row stride `width`).
///
/// # Safety
/// The block of `g` (element (rows.start + r, cols.start + c) at `g + r·ldg + c`) must be valid for
/// reads and writes and the same block of `w` for reads, and no one else may write them meanwhile.
unsafe fn add_weight_decay_block<T: Scalar>(
    rows: Range<usize>,
    cols: Range<usize>,
    g: *mut T,
    ldg: usize,
    w: *const T,
    width: usize,
    decay: &[T],
) {
    for (r, j) in rows.enumerate() {
        // SAFETY: the caller's contract, row r of the block.
        let (g, w) = unsafe {
            (
                std::slice::from_raw_parts_mut(g.add(r * ldg), cols.len()),
                std::slice::from_raw_parts(w.add(j * width + cols.start), cols.len()),
            )
        };
        // column k is fed by group k mod groups: the unit itself, or its channel before a flatten
        if decay.len() >= cols.end {
            for ((g, &w), &d) in g.iter_mut().zip(w).zip(&decay[cols.clone()]) {
                *g += d * w;
            }
        } else {
            for (c, (g, &w)) in g.iter_mut().zip(w).enumerate() {
                *g += decay[(cols.start + c) % decay.len()] * w;
            }
        }
    }
}

/// An update of the weights made block by block: `update(rows, cols, g, ldg, w)` updates those rows
/// and columns of the weights `w` (the whole matrix) from their gradient (element (rows.start + r,
/// cols.start + j) at `g + r·ldg + j`) and returns whether the update of those rows is complete
/// (false when max-norm still needs whole rows).
pub type WeightUpdate<'a, T> = &'a (dyn Fn(Range<usize>, Range<usize>, *const T, usize, *mut T) -> bool + Sync);

/// `z[i,j] += b[j]` and `a[i,:] = g(z[i,:])`, blocks of 16 rows in parallel (for softmax, whose
/// rows cannot be finished block by block inside the product).
fn bias_activate<T: Scalar>(bias: &[T], activation: Activation, z: &mut Matrix<T>, a: &mut Matrix<T>) {
    const ROWS: usize = 16;
    let out = bias.len();
    if out == 0 || z.rows() == 0 {
        return;
    }
    let blocks = z.as_mut_slice().par_chunks_mut(ROWS * out).zip(a.as_mut_slice().par_chunks_mut(ROWS * out));
    blocks.for_each(|(z_rows, a_rows)| {
        for (z_row, a_row) in z_rows.chunks_exact_mut(out).zip(a_rows.chunks_exact_mut(out)) {
            bias_activate_row(bias, activation, z_row, a_row);
        }
    });
}

/// `z[j] += b[j]`, then `a = g(z)` over the slice: a whole row, or for an elementwise activation
/// any run of columns (the bias loop and `forward_rows` are kept apart so that both vectorise).
fn bias_activate_row<T: Scalar>(bias: &[T], activation: Activation, z: &mut [T], a: &mut [T]) {
    for (v, &b) in z.iter_mut().zip(bias) {
        *v += b;
    }
    activation.forward_rows(z, a, z.len());
}
