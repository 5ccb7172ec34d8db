//! Activations `a[i,:] = g(z[i,:])` and their backward pass
//! `dz[i,j] = Σ_jj da[i,jj] · ∂a[i,jj]/∂z[i,j]` (math.md, D3, D4).
//!
//! For the elementwise activations the Jacobian is diagonal and the sum has one term:
//! `dz = da · g'(z)`. Softmax couples all units of a row, so its backward is the full
//! Jacobian-vector product `dz = s ⊙ (da − <s, da>)`, from `∂s_jj/∂z_j = s_jj (δ_jj,j − s_j)`.

use crate::error::{Error, Result};
use crate::tensor::{Matrix, Scalar};
use rayon::prelude::*;
use std::fmt;
use std::str::FromStr;

/// Elements per parallel task of the elementwise passes.
const CHUNK: usize = 16 * 1024;

/// Slope of leaky ReLU for negative inputs.
pub const LEAKY_SLOPE: f64 = 0.01;
/// SELU's constants (Klambauer et al. 2017).
pub const SELU_LAMBDA: f64 = 1.050_700_987_355_480_5;
pub const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
/// sqrt(2/π), for GELU's tanh form.
const GELU_C: f64 = 0.797_884_560_802_865_4;

/// Evaluates `$body` with `$g` a constant equal to the activation `$act`: one copy of the body per
/// activation, each with its formula inlined. An elementwise loop that matched on the activation
/// for every element did not vectorise; with ReLU known, its forward and backward loops do, and
/// W1 steps ran 2–3% faster (interleaved in-process A/B, BENCHMARKS.md).
macro_rules! specialised {
    ($act:expr, $g:ident => $body:expr) => {
        specialised!(@arms $act, $g, $body, Identity Relu LeakyRelu Sigmoid Tanh Elu Selu Gelu Softmax)
    };
    (@arms $act:expr, $g:ident, $body:expr, $($name:ident)*) => {
        match $act {
            $(Activation::$name => {
                const $g: Activation = Activation::$name;
                $body
            })*
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    Identity,
    Relu,
    /// max(z, 0.01 z)
    LeakyRelu,
    Sigmoid,
    Tanh,
    /// z for z > 0, exp(z) − 1 otherwise (α = 1)
    Elu,
    /// λ z for z > 0, λ α (exp(z) − 1) otherwise
    Selu,
    /// 0.5 z (1 + tanh(sqrt(2/π) (z + 0.044715 z³)))
    Gelu,
    /// exp(z_j) / Σ exp(z_jj) over the units of a row
    Softmax,
}

impl Activation {
    pub const ALL: [Activation; 9] = [
        Activation::Identity,
        Activation::Relu,
        Activation::LeakyRelu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Elu,
        Activation::Selu,
        Activation::Gelu,
        Activation::Softmax,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::LeakyRelu => "leaky-relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Elu => "elu",
            Activation::Selu => "selu",
            Activation::Gelu => "gelu",
            Activation::Softmax => "softmax",
        }
    }

    /// Whether g' jumps at z = 0 (finite differences must stay away from there).
    pub fn has_kink_at_zero(self) -> bool {
        matches!(self, Activation::Relu | Activation::LeakyRelu | Activation::Elu | Activation::Selu)
    }

    /// `a = g(z)`, row by row.
    pub fn forward<T: Scalar>(self, z: &Matrix<T>, a: &mut Matrix<T>) {
        a.ensure_shape(z.rows(), z.cols());
        let cols = z.cols();
        if cols == 0 {
            return;
        }
        let chunk = cols * (CHUNK / cols).max(1); // whole rows, so softmax sees complete rows
        a.as_mut_slice()
            .par_chunks_mut(chunk)
            .zip(z.as_slice().par_chunks(chunk))
            .for_each(|(a, z)| self.forward_rows(z, a, cols));
    }

    /// `a = g(z)` on whole rows of `cols` units stored one after another.
    pub fn forward_rows<T: Scalar>(self, z: &[T], a: &mut [T], cols: usize) {
        if self == Activation::Softmax {
            for (z, a) in z.chunks(cols).zip(a.chunks_mut(cols)) {
                softmax_row(z, a);
            }
        } else {
            crate::cpu::vectorised(|| {
                specialised!(self, G => {
                    for (y, &x) in a.iter_mut().zip(z) {
                        *y = G.apply(x);
                    }
                })
            })
        }
    }

    /// g(z) of one elementwise activation (not softmax).
    #[inline]
    pub fn apply<T: Scalar>(self, z: T) -> T {
        let f = T::from_f64;
        match self {
            Activation::Identity | Activation::Softmax => z,
            Activation::Relu => z.max(T::ZERO),
            Activation::LeakyRelu => {
                if z > T::ZERO {
                    z
                } else {
                    f(LEAKY_SLOPE) * z
                }
            }
            Activation::Sigmoid => sigmoid(z),
            Activation::Tanh => z.tanh(),
            Activation::Elu => {
                if z > T::ZERO {
                    z
                } else {
                    z.exp() - T::ONE
                }
            }
            Activation::Selu => {
                if z > T::ZERO {
                    f(SELU_LAMBDA) * z
                } else {
                    f(SELU_LAMBDA * SELU_ALPHA) * (z.exp() - T::ONE)
                }
            }
            Activation::Gelu => {
                let u = f(GELU_C) * (z + f(0.044715) * z * z * z);
                f(0.5) * z * (T::ONE + u.tanh())
            }
        }
    }

    /// g'(z) of one elementwise activation, given z and a = g(z) (whichever is cheaper).
    #[inline]
    pub fn derivative<T: Scalar>(self, z: T, a: T) -> T {
        let f = T::from_f64;
        match self {
            Activation::Identity | Activation::Softmax => T::ONE,
            Activation::Relu => {
                if z > T::ZERO {
                    T::ONE
                } else {
                    T::ZERO
                }
            }
            Activation::LeakyRelu => {
                if z > T::ZERO {
                    T::ONE
                } else {
                    f(LEAKY_SLOPE)
                }
            }
            Activation::Sigmoid => a * (T::ONE - a),
            Activation::Tanh => T::ONE - a * a,
            // a = exp(z) − 1, so g' = exp(z) = a + 1
            Activation::Elu => {
                if z > T::ZERO {
                    T::ONE
                } else {
                    a + T::ONE
                }
            }
            // a = λα(exp(z) − 1), so g' = λα exp(z) = a + λα
            Activation::Selu => {
                if z > T::ZERO {
                    f(SELU_LAMBDA)
                } else {
                    a + f(SELU_LAMBDA * SELU_ALPHA)
                }
            }
            // d/dz [0.5 z (1 + tanh u)] = 0.5 (1 + tanh u) + 0.5 z (1 − tanh² u) du/dz
            Activation::Gelu => {
                let u = f(GELU_C) * (z + f(0.044715) * z * z * z);
                let t = u.tanh();
                let du = f(GELU_C) * (T::ONE + f(3.0 * 0.044715) * z * z);
                f(0.5) * (T::ONE + t) + f(0.5) * z * (T::ONE - t * t) * du
            }
        }
    }

    /// `dz[i,j] = Σ_jj da[i,jj] · ∂a[i,jj]/∂z[i,j]` given the forward pass's z and a.
    pub fn backward<T: Scalar>(self, z: &Matrix<T>, a: &Matrix<T>, da: &Matrix<T>, dz: &mut Matrix<T>) {
        dz.ensure_shape(da.rows(), da.cols());
        if self == Activation::Softmax {
            for i in 0..da.rows() {
                softmax_jvp_row(a.row(i), da.row(i), dz.row_mut(i));
            }
            return;
        }
        // Diagonal Jacobian: dz = da · g'(z).
        let (z, a, da) =
            (z.as_slice().par_chunks(CHUNK), a.as_slice().par_chunks(CHUNK), da.as_slice().par_chunks(CHUNK));
        dz.as_mut_slice().par_chunks_mut(CHUNK).zip(z).zip(a).zip(da).for_each(|(((dz, z), a), da)| {
            crate::cpu::vectorised(|| {
                specialised!(self, G => {
                    for (((d, &zz), &aa), &g) in dz.iter_mut().zip(z).zip(a).zip(da) {
                        *d = g * G.derivative(zz, aa);
                    }
                })
            })
        });
    }
}

/// Logistic function, written so that exp never overflows.
#[inline]
pub fn sigmoid<T: Scalar>(z: T) -> T {
    if z >= T::ZERO {
        T::ONE / (T::ONE + (-z).exp())
    } else {
        let e = z.exp();
        e / (T::ONE + e)
    }
}

/// `s = softmax(z)` of one row, shifted by the row's maximum so that exp never overflows.
pub fn softmax_row<T: Scalar>(z: &[T], s: &mut [T]) {
    let max = z.iter().fold(z[0], |m, &v| m.max(v));
    let mut sum = T::ZERO;
    for (o, &v) in s.iter_mut().zip(z) {
        *o = (v - max).exp();
        sum += *o;
    }
    for o in s.iter_mut() {
        *o = *o / sum;
    }
}

/// Softmax's Jacobian-vector product of one row: `dz_j = s_j (da_j − Σ_jj s_jj da_jj)`.
pub fn softmax_jvp_row<T: Scalar>(s: &[T], da: &[T], dz: &mut [T]) {
    let mut dot = T::ZERO;
    for (&sj, &gj) in s.iter().zip(da) {
        dot += sj * gj;
    }
    for ((d, &sj), &gj) in dz.iter_mut().zip(s).zip(da) {
        *d = sj * (gj - dot);
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Activation::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Activation::ALL.iter().map(|a| a.name()).collect();
            Error::Config(format!("unknown activation '{s}' (expected one of {})", names.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_jvp_equals_the_explicit_jacobian() {
        let z = [0.3, -1.2, 2.0, 0.7];
        let da = [0.5, -0.25, 1.5, 0.1];
        let mut s = [0.0; 4];
        softmax_row(&z, &mut s);
        let mut dz = [0.0; 4];
        softmax_jvp_row(&s, &da, &mut dz);
        for j in 0..4 {
            // Σ_jj da_jj ∂s_jj/∂z_j with ∂s_jj/∂z_j = s_jj (δ − s_j), written out
            let explicit: f64 = (0..4).map(|jj| da[jj] * s[jj] * (if jj == j { 1.0 } else { 0.0 } - s[j])).sum();
            assert!((dz[j] - explicit).abs() < 1e-15);
        }
    }

    #[test]
    fn softmax_survives_huge_logits() {
        let mut s = [0.0f32; 3];
        softmax_row(&[1000.0f32, 0.0, -1000.0], &mut s);
        assert_eq!(s, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn derivatives_match_central_differences() {
        // away from ReLU-family kinks
        for act in Activation::ALL.into_iter().filter(|&a| a != Activation::Softmax) {
            for z in [-2.3f64, -0.4, 0.2, 1.7] {
                let h = 1e-6;
                let numeric = (act.apply(z + h) - act.apply(z - h)) / (2.0 * h);
                let analytic = act.derivative(z, act.apply(z));
                assert!((numeric - analytic).abs() < 1e-8, "{act} at {z}: {numeric} vs {analytic}");
            }
        }
    }

    #[test]
    fn the_matrix_passes_compute_each_activations_own_formula() {
        // `specialised!` compiles one loop per activation; a wrong arm would pair a loop with
        // another activation's formula, consistently in forward and backward (which a gradient
        // check cannot see), so compare both passes with the scalar definitions element by element.
        let z = Matrix::from_vec(2, 4, vec![-2.3f32, -0.4, 0.0, 0.2, 1.7, -1.0, 3.0, 0.5]).unwrap();
        let da = Matrix::from_vec(2, 4, vec![0.3f32, -1.2, 0.7, 2.0, -0.1, 0.9, -0.6, 1.1]).unwrap();
        for act in Activation::ALL.into_iter().filter(|&a| a != Activation::Softmax) {
            let (mut a, mut dz) = (Matrix::zeros(0, 0), Matrix::zeros(0, 0));
            act.forward(&z, &mut a);
            act.backward(&z, &a, &da, &mut dz);
            for (e, &zz) in z.as_slice().iter().enumerate() {
                assert_eq!(a.as_slice()[e], act.apply(zz), "{act} forward at {zz}");
                let expected = da.as_slice()[e] * act.derivative(zz, act.apply(zz));
                assert_eq!(dz.as_slice()[e], expected, "{act} backward at {zz}");
            }
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for act in Activation::ALL {
            assert_eq!(act.name().parse::<Activation>().unwrap(), act);
        }
        let err = "swish".parse::<Activation>().unwrap_err().to_string();
        assert!(err.contains("swish"), "{err}");
    }
}
