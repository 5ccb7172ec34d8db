//! Layers, each with an explicit forward and backward pass. Only the dense layer exists so far;
//! convolution and pooling (design.md) are not built yet.

pub mod dense;

pub use dense::Dense;
