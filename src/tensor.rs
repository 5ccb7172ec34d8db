//! The matrix type and the matrix product.
//!
//! A [`Matrix`] is dense, row-major and batch-major: row `i` is example `i` of a mini-batch, column
//! `k` is unit `k`. Its storage is 64-byte aligned so that AVX-512 loads never straddle a cache line.
//! The product is dropnet's own ([`crate::gemm`]); a transposed operand is the same buffer read
//! with swapped strides, so `dzᵀ·ã` and `dz·W` in backward cost no copy outside the packing.

use crate::error::{shape, Error, Result};
use crate::gemm::Gemm;
pub use crate::scalar::Real;
use std::alloc::{self, Layout};
use std::fmt;

/// The element types a network can be computed in: `f32` for training, `f64` for gradient checks.
/// Arithmetic comes from [`Real`], the matrix product from [`Gemm`]; this name joins the two.
pub trait Scalar: Gemm {}

impl<T: Gemm> Scalar for T {}

/// Alignment of every matrix buffer: one cache line, one AVX-512 register.
const ALIGN: usize = 64;

/// A heap buffer of `cap` zero-initialised scalars, aligned to [`ALIGN`] bytes, of which the first
/// `len` are in use.
struct AlignedBuf<T: Scalar> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
    cap: usize,
}

// SAFETY: the buffer owns its elements exclusively, like a Vec<T>, and T is Send + Sync.
unsafe impl<T: Scalar> Send for AlignedBuf<T> {}
unsafe impl<T: Scalar> Sync for AlignedBuf<T> {}

impl<T: Scalar> AlignedBuf<T> {
    /// The layout of `len` elements, or `None` when its size does not fit in `isize`.
    fn layout(len: usize) -> Option<Layout> {
        Layout::array::<T>(len).ok()?.align_to(ALIGN).ok()
    }

    /// `len` zeros, or an error when the size overflows or the memory cannot be had.
    fn try_zeros(len: usize) -> Result<Self> {
        if len == 0 {
            return Ok(Self { ptr: std::ptr::NonNull::dangling(), len, cap: 0 });
        }
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        let out_of_memory = || Error::OutOfMemory { what: format!("a matrix of {len} values"), bytes };
        let layout = Self::layout(len).ok_or_else(out_of_memory)?;
        // SAFETY: layout has non-zero size; all-zero bytes are 0.0 for f32 and f64.
        let raw = unsafe { alloc::alloc_zeroed(layout) } as *mut T;
        let ptr = std::ptr::NonNull::new(raw).ok_or_else(out_of_memory)?;
        Ok(Self { ptr, len, cap: len })
    }

    fn as_slice(&self) -> &[T] {
        // SAFETY: ptr is valid for len initialised elements (or dangling with len 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Scalar> Drop for AlignedBuf<T> {
    fn drop(&mut self) {
        if self.cap != 0 {
            let layout = Self::layout(self.cap).expect("the layout `try_zeros` allocated with");
            // SAFETY: allocated in `try_zeros` with exactly this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr() as *mut u8, layout) }
        }
    }
}

impl<T: Scalar> Clone for AlignedBuf<T> {
    fn clone(&self) -> Self {
        let mut copy = Self::try_zeros(self.len).unwrap_or_else(|e| panic!("cannot copy a matrix: {e}"));
        copy.as_mut_slice().copy_from_slice(self.as_slice());
        copy
    }
}

/// A dense row-major matrix of `rows × cols` scalars in 64-byte aligned storage.
#[derive(Clone)]
pub struct Matrix<T: Scalar> {
    rows: usize,
    cols: usize,
    buf: AlignedBuf<T>,
}

impl<T: Scalar> Matrix<T> {
    /// A `rows × cols` matrix of zeros. For sizes the program chose (a layer's workspace); sizes
    /// that come from a file or a flag go through [`Matrix::try_zeros`].
    ///
    /// # Panics
    /// When `rows · cols` values do not fit in memory.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self::try_zeros(rows, cols).unwrap_or_else(|e| panic!("Matrix::zeros({rows}, {cols}): {e}"))
    }

    /// A `rows × cols` matrix of zeros, or an error when the size overflows or the memory cannot
    /// be had.
    pub fn try_zeros(rows: usize, cols: usize) -> Result<Self> {
        let len = rows
            .checked_mul(cols)
            .ok_or_else(|| shape("Matrix::try_zeros", format!("{rows}x{cols} values overflow the address space")))?;
        Ok(Self { rows, cols, buf: AlignedBuf::try_zeros(len)? })
    }

    /// A matrix holding `data` (row-major, `rows * cols` values).
    pub fn from_vec(rows: usize, cols: usize, data: Vec<T>) -> Result<Self> {
        Self::from_slice(rows, cols, &data)
    }

    /// A matrix holding a copy of `data` (row-major, `rows * cols` values).
    pub fn from_slice(rows: usize, cols: usize, data: &[T]) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(shape("Matrix::from_slice", format!("{} values cannot fill {rows}x{cols}", data.len())));
        }
        let mut m = Self::try_zeros(rows, cols)?;
        m.as_mut_slice().copy_from_slice(data);
        Ok(m)
    }

    /// A matrix whose element (i, k) is `f(i, k)`.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> T) -> Self {
        let mut m = Self::zeros(rows, cols);
        for i in 0..rows {
            for (k, v) in m.row_mut(i).iter_mut().enumerate() {
                *v = f(i, k);
            }
        }
        m
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    pub fn as_slice(&self) -> &[T] {
        self.buf.as_slice()
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.buf.as_mut_slice()
    }

    pub fn row(&self, i: usize) -> &[T] {
        &self.as_slice()[i * self.cols..(i + 1) * self.cols]
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [T] {
        let cols = self.cols;
        &mut self.as_mut_slice()[i * cols..(i + 1) * cols]
    }

    pub fn get(&self, i: usize, k: usize) -> T {
        self.as_slice()[i * self.cols + k]
    }

    pub fn set(&mut self, i: usize, k: usize, value: T) {
        let cols = self.cols;
        self.as_mut_slice()[i * cols + k] = value;
    }

    /// Make this a `rows × cols` matrix, reusing the allocation when it is large enough. The
    /// contents are unspecified afterwards (callers overwrite them). This is how layers keep their
    /// workspaces: allocated on the first batch, reused on every later one; a buffer that serves
    /// several sizes (the gradient between two layers) grows to the largest once.
    ///
    /// A workspace that cannot be had (the run's memory is estimated before it starts, so this is
    /// what the estimate missed) unwinds with a [`WorkspaceOutOfMemory`] payload, which the
    /// command line reports as an error, exit status 1.
    pub fn ensure_shape(&mut self, rows: usize, cols: usize) {
        let len = rows.checked_mul(cols).unwrap_or_else(|| workspace_failure(rows, cols, "the size overflows".into()));
        if len <= self.buf.cap {
            self.buf.len = len;
        } else {
            self.buf = AlignedBuf::try_zeros(len).unwrap_or_else(|e| workspace_failure(rows, cols, e.to_string()));
        }
        self.rows = rows;
        self.cols = cols;
    }

    /// The same values read as a `rows × cols` matrix (their row-major order unchanged): how a
    /// batch of feature maps, `[N, positions·C]`, becomes the `[N·positions, C]` of a product.
    pub fn reshape(&mut self, rows: usize, cols: usize) -> Result<()> {
        if rows.checked_mul(cols) != Some(self.buf.len) {
            return Err(shape(
                "Matrix::reshape",
                format!("{}x{} cannot be read as {rows}x{cols}", self.rows, self.cols),
            ));
        }
        self.rows = rows;
        self.cols = cols;
        Ok(())
    }

    /// The same matrix in another element type (f32 ↔ f64).
    pub fn cast<U: Scalar>(&self) -> Matrix<U> {
        let mut out = Matrix::zeros(self.rows, self.cols);
        for (o, &v) in out.as_mut_slice().iter_mut().zip(self.as_slice()) {
            *o = U::from_f64(v.to_f64());
        }
        out
    }
}

/// The empty 0×0 matrix (no allocation).
impl<T: Scalar> Default for Matrix<T> {
    fn default() -> Self {
        Self::zeros(0, 0)
    }
}

impl<T: Scalar> fmt::Debug for Matrix<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Matrix {}x{} [", self.rows, self.cols)?;
        for i in 0..self.rows {
            writeln!(f, "  {:?}", self.row(i))?;
        }
        write!(f, "]")
    }
}

/// Whether a matrix operand enters a product as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    /// op(A) = A
    No,
    /// op(A) = Aᵀ (read through swapped strides; nothing is copied)
    Yes,
}

/// Rows, columns, row stride and column stride of `op(m)`.
fn operand<T: Scalar>(m: &Matrix<T>, t: Trans) -> (usize, usize, isize, isize) {
    let cols = m.cols as isize;
    match t {
        Trans::No => (m.rows, m.cols, cols, 1),
        Trans::Yes => (m.cols, m.rows, 1, cols),
    }
}

/// `c = op(a)·op(b)`, or `c += op(a)·op(b)` when `accumulate` is true.
///
/// Runs on the current rayon pool with all of its threads (the `--threads` knob sizes that pool),
/// and single-threaded when the pool has one thread or the product is small. The result does not
/// depend on the number of threads, bit for bit (see [`crate::gemm`]).
pub fn matmul<T: Scalar>(
    c: &mut Matrix<T>,
    a: &Matrix<T>,
    ta: Trans,
    b: &Matrix<T>,
    tb: Trans,
    accumulate: bool,
) -> Result<()> {
    matmul_then(c, a, ta, b, tb, accumulate, None, true)
}

/// [`matmul`], then `epilogue(rows, cols, block, ld)` on each finished block of c while it is still
/// in cache (see [`crate::gemm::Epilogue`]): how the optimizer update rides along with the weight
/// gradient. With `store_c` false, c is scratch: the epilogue sees the product, but c may not hold
/// it afterwards (see [`crate::gemm::Product::store_c`]).
#[allow(clippy::too_many_arguments)]
pub fn matmul_then<T: Scalar>(
    c: &mut Matrix<T>,
    a: &Matrix<T>,
    ta: Trans,
    b: &Matrix<T>,
    tb: Trans,
    accumulate: bool,
    epilogue: Option<crate::gemm::Epilogue<T>>,
    store_c: bool,
) -> Result<()> {
    let (m, k, a_rs, a_cs) = operand(a, ta);
    let (kb, n, b_rs, b_cs) = operand(b, tb);
    if k != kb || c.rows != m || c.cols != n {
        return Err(shape("matmul", format!("op(a) is {m}x{k}, op(b) is {kb}x{n}, c is {}x{}", c.rows, c.cols)));
    }
    if k == 0 {
        if !accumulate {
            c.as_mut_slice().fill(T::ZERO);
        }
        if let Some(epilogue) = epilogue {
            epilogue(0..m, 0..n, c.as_mut_slice().as_mut_ptr(), n);
        }
        return Ok(());
    }
    let product = crate::gemm::Product {
        m,
        n,
        k,
        a: crate::gemm::Operand { ptr: a.as_slice().as_ptr(), rs: a_rs, cs: a_cs },
        b: crate::gemm::Operand { ptr: b.as_slice().as_ptr(), rs: b_rs, cs: b_cs },
        c: c.as_mut_slice().as_mut_ptr(),
        ldc: n,
        accumulate,
        store_c,
        origin: (0, 0),
    };
    // SAFETY: the shapes were checked above, so every element the product addresses through
    // (m, n, k) and the strides lies inside the three buffers; c does not alias a or b (&mut vs &).
    unsafe { crate::gemm::run(&product, epilogue) };
    Ok(())
}

/// Why a layer's workspace of `rows × cols` values could not be allocated during a run: the
/// payload of [`Matrix::ensure_shape`]'s unwinding.
#[derive(Debug)]
pub struct WorkspaceOutOfMemory {
    pub rows: usize,
    pub cols: usize,
    pub error: String,
}

fn workspace_failure(rows: usize, cols: usize, error: String) -> ! {
    std::panic::panic_any(WorkspaceOutOfMemory { rows, cols, error })
}

impl std::fmt::Display for WorkspaceOutOfMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a {}x{} workspace could not be allocated ({}): lower --batch or the network's size",
            self.rows, self.cols, self.error
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_that_cannot_be_had_unwinds_with_its_size() {
        for (rows, cols, why) in [(1usize << 40, 1usize << 20, "not enough memory"), (1 << 62, 8, "overflows")] {
            let caught = std::panic::catch_unwind(|| Matrix::<f32>::zeros(0, 0).ensure_shape(rows, cols)).unwrap_err();
            let oom = caught.downcast_ref::<WorkspaceOutOfMemory>().expect("the payload says what failed");
            assert_eq!((oom.rows, oom.cols), (rows, cols));
            assert!(oom.to_string().contains(why), "{oom}");
        }
    }

    /// The textbook triple loop, the reference for the gemm wrapper.
    fn naive(a: &Matrix<f64>, ta: Trans, b: &Matrix<f64>, tb: Trans) -> Matrix<f64> {
        let at = |i: usize, k: usize| if ta == Trans::No { a.get(i, k) } else { a.get(k, i) };
        let bt = |k: usize, j: usize| if tb == Trans::No { b.get(k, j) } else { b.get(j, k) };
        let (m, kk, _, _) = operand(a, ta);
        let (_, n, _, _) = operand(b, tb);
        Matrix::from_fn(m, n, |i, j| (0..kk).map(|k| at(i, k) * bt(k, j)).sum())
    }

    fn filled(rows: usize, cols: usize, salt: usize) -> Matrix<f64> {
        Matrix::from_fn(rows, cols, |i, k| ((i * 31 + k * 17 + salt) % 23) as f64 / 7.0 - 1.5)
    }

    #[test]
    fn matmul_matches_naive_for_every_transpose() {
        let (m, k, n) = (13, 37, 11);
        for ta in [Trans::No, Trans::Yes] {
            for tb in [Trans::No, Trans::Yes] {
                let a = if ta == Trans::No { filled(m, k, 1) } else { filled(k, m, 1) };
                let b = if tb == Trans::No { filled(k, n, 2) } else { filled(n, k, 2) };
                let expected = naive(&a, ta, &b, tb);
                let mut c = Matrix::zeros(m, n);
                matmul(&mut c, &a, ta, &b, tb, false).unwrap();
                for (x, y) in c.as_slice().iter().zip(expected.as_slice()) {
                    assert!((x - y).abs() < 1e-12, "{ta:?}/{tb:?}: {x} vs {y}");
                }
                // accumulate adds a second product on top of the first
                matmul(&mut c, &a, ta, &b, tb, true).unwrap();
                for (x, y) in c.as_slice().iter().zip(expected.as_slice()) {
                    assert!((x - 2.0 * y).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn matmul_f32_agrees_with_f64() {
        let a = filled(64, 100, 3);
        let b = filled(100, 50, 4);
        let mut c64 = Matrix::zeros(64, 50);
        matmul(&mut c64, &a, Trans::No, &b, Trans::No, false).unwrap();
        let mut c32 = Matrix::<f32>::zeros(64, 50);
        matmul(&mut c32, &a.cast(), Trans::No, &b.cast(), Trans::No, false).unwrap();
        for (x, y) in c32.as_slice().iter().zip(c64.as_slice()) {
            // 100 products of magnitude <= 2.3 each, f32 rounding 6e-8 relative: 1e-4 is ample
            assert!((*x as f64 - y).abs() < 1e-4);
        }
    }

    #[test]
    fn matmul_rejects_mismatched_shapes() {
        let a = Matrix::<f32>::zeros(2, 3);
        let b = Matrix::<f32>::zeros(4, 2);
        let mut c = Matrix::zeros(2, 2);
        let err = matmul(&mut c, &a, Trans::No, &b, Trans::No, false).unwrap_err();
        assert!(err.to_string().contains("op(a) is 2x3, op(b) is 4x2"), "{err}");
    }

    #[test]
    fn storage_is_64_byte_aligned() {
        for n in [1, 3, 17, 1000] {
            let m = Matrix::<f32>::zeros(n, 3);
            assert_eq!(m.as_slice().as_ptr() as usize % 64, 0);
        }
    }
}
