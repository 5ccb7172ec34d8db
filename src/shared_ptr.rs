//! Raw pointers handed to the tasks of a parallel loop. Each wrapper is `Send + Sync` on the
//! promise its constructor's caller makes; `get` is a method rather than `.0` so that a closure
//! captures the whole (Sync) wrapper instead of only its raw-pointer field.

/// A pointer the tasks only read through, while nothing writes what it points to.
#[derive(Clone, Copy)]
pub(crate) struct SharedPtr<T>(pub *const T);
// SAFETY: the tasks only read through the pointer, and nothing writes the data while they run.
unsafe impl<T> Send for SharedPtr<T> {}
unsafe impl<T> Sync for SharedPtr<T> {}
impl<T> SharedPtr<T> {
    pub fn get(self) -> *const T {
        self.0
    }
}

/// A matrix that the tasks write block by block (a product's epilogues: the weights in the fused
/// update, the activations of a forward pass): each block is written by exactly one task.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub *mut T);
// SAFETY: each block of the matrix is written by the one task it was handed to.
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}
impl<T> SharedMut<T> {
    pub fn get(self) -> *mut T {
        self.0
    }
}
