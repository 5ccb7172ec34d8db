#![doc = include_str!("../README.md")]

pub mod activation;
pub mod calibration;
pub mod cpu;
pub mod data;
pub mod dropout;
pub mod error;
pub mod eval;
pub mod files;
pub mod gemm;
pub mod gradcheck;
pub mod init;
pub mod layer;
pub mod limits;
pub mod loss;
pub mod memory;
pub mod model_file;
pub mod network;
pub mod optim;
pub mod regression;
pub mod rng;
pub mod scalar;
mod shared_ptr;
pub mod stack;
pub mod tensor;
pub mod train;
pub mod uci;

pub use activation::Activation;
pub use dropout::{BitMask, Keep, Scaling};
pub use error::{Error, Result};
pub use loss::{Loss, Targets};
pub use network::{Architecture, Init, Mode, Network};
pub use tensor::{matmul, Matrix, Scalar, Trans};
