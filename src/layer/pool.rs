//! Max- and average-pooling over K×K windows with stride S, no padding, on feature maps stored
//! channels last (math.md, P1–P4):
//!
//! ```text
//! max  y[i,(oh,ow,c)] = max over kh,kw < K of x[i,(oh·S+kh, ow·S+kw, c)]    (ties: the first in
//!                                                                          scan order, kh then kw)
//!      dx[i,(h,w,c)] = Σ over the windows whose maximum is (h,w,c) of dy
//! avg  y[i,(oh,ow,c)] = 1/K² · Σ over the window of x
//!      dx[i,(h,w,c)] = 1/K² · Σ over the windows containing (h,w,c) of dy
//! ```
//!
//! Output size: `(H − K)/S + 1` by `(W − K)/S + 1`, rounded down.

use crate::error::{shape, Error, Result};
use crate::stack::Shape;
use crate::tensor::{Matrix, Scalar};
use rayon::prelude::*;

/// Which pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// A pooling layer and, for max-pooling, where each output's maximum was.
#[derive(Clone, Debug)]
pub struct Pool<T: Scalar> {
    pub kind: PoolKind,
    pub kernel: usize,
    pub stride: usize,
    /// The input map.
    pub input: Shape,
    /// The output map.
    pub output_shape: Shape,
    y: Matrix<T>,
    /// Max-pooling: per output value, which tap of its window (kh·K + kw) held the maximum.
    argmax: Vec<u32>,
}

/// The output map of a `kernel`, `stride` window sweep over `input`.
pub fn output_shape(input: Shape, kernel: usize, stride: usize, what: &str) -> Result<Shape> {
    let Shape::Map { c, h, w } = input else {
        return Err(Error::Config(format!("{what} needs a feature map, not {input} units")));
    };
    if kernel == 0 || stride == 0 {
        return Err(Error::Config(format!("{what} needs a window and a stride of 1 or more")));
    }
    if kernel > h || kernel > w {
        return Err(Error::Config(format!("{what}: a {kernel}x{kernel} window does not fit a {h}x{w} map")));
    }
    Ok(Shape::Map { c, h: (h - kernel) / stride + 1, w: (w - kernel) / stride + 1 })
}

impl<T: Scalar> Pool<T> {
    pub fn new(kind: PoolKind, kernel: usize, stride: usize, input: Shape) -> Result<Self> {
        let what = if kind == PoolKind::Max { "max-pooling" } else { "average-pooling" };
        let output_shape = output_shape(input, kernel, stride, what)?;
        Ok(Self { kind, kernel, stride, input, output_shape, y: Matrix::default(), argmax: Vec::new() })
    }

    pub fn output(&self) -> &Matrix<T> {
        &self.y
    }

    fn dims(&self) -> (usize, usize, usize, usize, usize) {
        let (Shape::Map { c, w, .. }, Shape::Map { h: oh, w: ow, .. }) = (self.input, self.output_shape) else {
            unreachable!("new() checked that both are maps")
        };
        (c, w, oh, ow, self.kernel)
    }

    /// Forward pass (P1 or P3), examples in parallel.
    pub fn forward(&mut self, x: &Matrix<T>) -> Result<()> {
        if x.cols() != self.input.units() {
            return Err(shape(
                "pool forward",
                format!("input has {} values, the layer takes {}", x.cols(), self.input),
            ));
        }
        let (c, w, _, ow, k) = self.dims();
        let (s, out_units, rows) = (self.stride, self.output_shape.units(), x.rows());
        self.y.ensure_shape(rows, out_units);
        let inv = T::from_f64(1.0 / (k * k) as f64);
        let tap_offset = tap_offsets(k, w, c);
        let x_rows = x.as_slice().par_chunks(x.cols().max(1));
        let y_rows = self.y.as_mut_slice().par_chunks_mut(out_units.max(1));
        // Each window's channels are contiguous (channels last): the inner loops run over them.
        match self.kind {
            PoolKind::Max => {
                self.argmax.resize(rows * out_units, 0);
                let arg_rows = self.argmax.par_chunks_mut(out_units.max(1));
                y_rows.zip(arg_rows).zip(x_rows).for_each(|((y, arg), x)| {
                    crate::cpu::vectorised(|| {
                        let windows = y.chunks_exact_mut(c).zip(arg.chunks_exact_mut(c)).enumerate();
                        for (o, (y, arg)) in windows {
                            let (oy, ox) = (o / ow, o % ow);
                            let first = (oy * s * w + ox * s) * c;
                            y.copy_from_slice(&x[first..first + c]);
                            arg.fill(0);
                            for (tap, &offset) in tap_offset.iter().enumerate().skip(1) {
                                let at = first + offset;
                                // selects, not branches: the comparisons are data, not patterns
                                for ((best, a), &v) in y.iter_mut().zip(arg.iter_mut()).zip(&x[at..at + c]) {
                                    let better = v > *best;
                                    *best = if better { v } else { *best };
                                    *a = if better { tap as u32 } else { *a };
                                }
                            }
                        }
                    })
                });
            }
            PoolKind::Avg => {
                y_rows.zip(x_rows).for_each(|(y, x)| {
                    for (o, y) in y.chunks_exact_mut(c).enumerate() {
                        let (oy, ox) = (o / ow, o % ow);
                        y.fill(T::ZERO);
                        for kh in 0..k {
                            for kw in 0..k {
                                let at = ((oy * s + kh) * w + ox * s + kw) * c;
                                for (sum, &v) in y.iter_mut().zip(&x[at..at + c]) {
                                    *sum += v;
                                }
                            }
                        }
                        for v in y {
                            *v *= inv;
                        }
                    }
                });
            }
        }
        Ok(())
    }

    /// The smallest difference, over every window of `x`, between its largest value and the next
    /// one (how close max-pooling is to a tie; the gradient check keeps it away from 0). Exact zeros
    /// tie with each other harmlessly: they are dropped units or ReLU outputs, which a small change
    /// of the parameters leaves at zero, so they count once.
    pub fn smallest_gap(&self, x: &Matrix<T>) -> f64 {
        let (c, w, oh, ow, k) = self.dims();
        let s = self.stride;
        let mut smallest = f64::INFINITY;
        for i in 0..x.rows() {
            let row = x.row(i);
            for o in 0..oh * ow * c {
                let (oy, ox, ch) = (o / (ow * c), o / c % ow, o % c);
                let (mut first, mut second) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
                for kh in 0..k {
                    for kw in 0..k {
                        let v = row[((oy * s + kh) * w + ox * s + kw) * c + ch].to_f64();
                        if v > first {
                            (first, second) = (v, first);
                        } else if v > second && !(v == 0.0 && first == 0.0) {
                            second = v;
                        }
                    }
                }
                smallest = smallest.min(first - second);
            }
        }
        smallest
    }

    /// Backward pass (P2 or P4): `dx` from `dy`, examples in parallel.
    pub fn backward(&self, dy: &Matrix<T>, dx: &mut Matrix<T>) -> Result<()> {
        if dy.shape() != self.y.shape() {
            return Err(shape("pool backward", format!("gradient is {:?}, output {:?}", dy.shape(), self.y.shape())));
        }
        let (c, w, _, ow, k) = self.dims();
        let (s, in_units, out_units) = (self.stride, self.input.units(), self.output_shape.units());
        dx.ensure_shape(dy.rows(), in_units);
        let inv = T::from_f64(1.0 / (k * k) as f64);
        let tap_offset = tap_offsets(k, w, c);
        let chunks = dx.as_mut_slice().par_chunks_mut(in_units.max(1)).zip(dy.as_slice().par_chunks(out_units.max(1)));
        match self.kind {
            PoolKind::Max => chunks.zip(self.argmax.par_chunks(out_units.max(1))).for_each(|((dx, dy), arg)| {
                dx.fill(T::ZERO);
                for (o, (dy, arg)) in dy.chunks_exact(c).zip(arg.chunks_exact(c)).enumerate() {
                    let first = ((o / ow) * s * w + (o % ow) * s) * c;
                    for (ch, (&g, &tap)) in dy.iter().zip(arg).enumerate() {
                        dx[first + tap_offset[tap as usize] + ch] += g;
                    }
                }
            }),
            PoolKind::Avg => chunks.for_each(|(dx, dy)| {
                dx.fill(T::ZERO);
                for (o, dy) in dy.chunks_exact(c).enumerate() {
                    let (oy, ox) = (o / ow, o % ow);
                    for kh in 0..k {
                        for kw in 0..k {
                            let at = ((oy * s + kh) * w + ox * s + kw) * c;
                            for (d, &g) in dx[at..at + c].iter_mut().zip(dy) {
                                *d += g * inv;
                            }
                        }
                    }
                }
            }),
        }
        Ok(())
    }
}

/// Where tap (kh, kw) of a K×K window lies from the window's first value, in a channels-last map
/// `w` wide with `c` channels: `(kh·w + kw)·c` at index kh·K + kw.
fn tap_offsets(k: usize, w: usize, c: usize) -> Vec<usize> {
    (0..k * k).map(|tap| (tap / k * w + tap % k) * c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offset of (h, w, c) in a 4x4 map of 2 channels.
    fn at(h: usize, w: usize, c: usize) -> usize {
        (h * 4 + w) * 2 + c
    }

    /// A 1-example map of 4x4 positions and 2 channels from values in (h, w, c) order.
    fn map(values: impl Fn(usize, usize, usize) -> f64) -> Matrix<f64> {
        Matrix::from_fn(1, 32, |_, k| values(k / 8, k / 2 % 4, k % 2))
    }

    #[test]
    fn max_pooling_ties_go_to_the_first_maximum_in_scan_order() {
        // every value 1: each 2x2 window's maximum is its top-left position (kh = 0, kw = 0)
        let mut pool = Pool::<f64>::new(PoolKind::Max, 2, 2, Shape::Map { c: 2, h: 4, w: 4 }).unwrap();
        pool.forward(&map(|_, _, _| 1.0)).unwrap();
        let mut dx = Matrix::zeros(0, 0);
        pool.backward(&Matrix::from_fn(1, 8, |_, k| 1.0 + k as f64), &mut dx).unwrap();
        for h in 0..4 {
            for w in 0..4 {
                for c in 0..2 {
                    let g = dx.get(0, at(h, w, c));
                    let first = h % 2 == 0 && w % 2 == 0;
                    assert_eq!(g != 0.0, first, "({h}, {w}, {c}) got {g}");
                }
            }
        }
        // a tie between the second and fourth positions of a window: the second (scan order) wins
        let mut x = map(|_, _, _| 0.0);
        x.set(0, at(0, 1, 0), 5.0);
        x.set(0, at(1, 1, 0), 5.0);
        pool.forward(&x).unwrap();
        pool.backward(&Matrix::from_fn(1, 8, |_, _| 1.0), &mut dx).unwrap();
        assert_eq!((dx.get(0, at(0, 1, 0)), dx.get(0, at(1, 1, 0))), (1.0, 0.0));
    }

    #[test]
    fn average_pooling_with_overlapping_windows_spreads_the_gradient() {
        let mut pool = Pool::<f64>::new(PoolKind::Avg, 3, 1, Shape::Map { c: 2, h: 4, w: 4 }).unwrap();
        assert_eq!(pool.output_shape, Shape::Map { c: 2, h: 2, w: 2 });
        pool.forward(&map(|h, w, c| (h * 4 + w) as f64 + 100.0 * c as f64)).unwrap();
        // the window at (0, 0) averages positions 0..3 x 0..3: mean of h·4 + w is 5
        assert_eq!(pool.output().get(0, 0), 5.0);
        assert_eq!(pool.output().get(0, 1), 105.0);
        let mut dx = Matrix::zeros(0, 0);
        pool.backward(&Matrix::from_fn(1, 8, |_, _| 9.0), &mut dx).unwrap();
        // the centre positions (1..3, 1..3) lie in all four windows: 4 · 9/9; the corners in one
        assert_eq!(dx.get(0, at(1, 1, 0)), 4.0);
        assert_eq!(dx.get(0, 0), 1.0);
    }

    #[test]
    fn windows_that_do_not_fit_are_errors() {
        let err = Pool::<f64>::new(PoolKind::Max, 5, 1, Shape::Map { c: 1, h: 4, w: 4 }).unwrap_err().to_string();
        assert!(err.contains("5x5 window does not fit a 4x4 map"), "{err}");
        assert!(Pool::<f64>::new(PoolKind::Avg, 2, 2, Shape::Flat(8)).is_err());
    }
}
