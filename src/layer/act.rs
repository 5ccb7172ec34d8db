//! An activation that is not fused into the layer before it (after a pooling layer, for
//! instance): `a[i,:] = g(z[i,:])`, backward the Jacobian-vector product (math.md, D3, D4).

use crate::activation::Activation;
use crate::error::{shape, Result};
use crate::tensor::{Matrix, Scalar};

/// A standalone activation and its last input and output, kept for backward.
#[derive(Clone, Debug)]
pub struct ActivationLayer<T: Scalar> {
    pub activation: Activation,
    z: Matrix<T>,
    a: Matrix<T>,
}

impl<T: Scalar> ActivationLayer<T> {
    pub fn new(activation: Activation) -> Self {
        Self { activation, z: Matrix::default(), a: Matrix::default() }
    }

    /// `a = g(z)` (D3).
    pub fn forward(&mut self, z: &Matrix<T>) {
        self.z.ensure_shape(z.rows(), z.cols());
        self.z.as_mut_slice().copy_from_slice(z.as_slice());
        self.activation.forward(&self.z, &mut self.a);
    }

    pub fn output(&self) -> &Matrix<T> {
        &self.a
    }

    /// The input z of the last forward pass.
    pub fn input(&self) -> &Matrix<T> {
        &self.z
    }

    /// `dz = ∂a/∂z · da` (D4).
    pub fn backward(&self, da: &Matrix<T>, dz: &mut Matrix<T>) -> Result<()> {
        if da.shape() != self.a.shape() {
            return Err(shape(
                "activation backward",
                format!("gradient is {:?}, output {:?}", da.shape(), self.a.shape()),
            ));
        }
        self.activation.backward(&self.z, &self.a, da, dz);
        Ok(())
    }
}
