//! The limits on what one input may declare or hold. Every size read from a file or a flag is
//! checked against these before anything is allocated, so that a hostile or mistaken input gets
//! an error message instead of exhausting memory. The README and `docs/reliability.md` state them.

/// Elements of one tensor: a weight matrix, a data set's feature matrix, a layer's input width
/// times the batch. 2^28 f32 values are 1 GiB; MNIST's training images are 47 M.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 28;

/// Trainable scalars of one network (all its tensors together): 4 GiB of f32 weights, and as
/// much again for their gradients and for each optimizer slot.
pub const MAX_NETWORK_PARAMS: usize = 1 << 30;

/// Units of one layer. Mask addresses hold a column in 32 bits, and no real layer is wider.
pub const MAX_LAYER_UNITS: usize = 1 << 24;

/// Layers of one network (the mask address holds the layer in 24 bits).
pub const MAX_LAYERS: usize = 1 << 10;

/// Bytes of a model file: 8 header-length bytes, the header and the tensors. Three tensors of
/// [`MAX_TENSOR_ELEMENTS`] f32 values (a weight and its two optimizer slots) fit.
pub const MAX_MODEL_FILE_BYTES: u64 = 16 << 30;

/// Bytes of a safetensors header (the JSON with the metadata and the tensor table). The
/// safetensors crate allows 100 MB; a dropnet model's header is a few kilobytes plus the keep
/// probabilities and the training history.
pub const MAX_MODEL_HEADER_BYTES: usize = 16 << 20;

/// Bytes of one decompressed IDX file: the 16-byte header and [`MAX_TENSOR_ELEMENTS`] bytes.
pub const MAX_IDX_BYTES: u64 = MAX_TENSOR_ELEMENTS as u64 + 16;

/// Bytes of one physical line of a CSV file (a record's text between line breaks).
pub const MAX_CSV_LINE_BYTES: usize = 1 << 20;

/// Bytes of a CSV file.
pub const MAX_CSV_BYTES: u64 = 4 << 30;

/// Bytes of a TOML recipe or a JSON keep file.
pub const MAX_TEXT_FILE_BYTES: u64 = 16 << 20;

/// Monte-Carlo samples per prediction (`--mc`).
pub const MAX_MC_SAMPLES: u32 = 1 << 16;

/// Examples per mini-batch (`--batch`).
pub const MAX_BATCH: usize = 1 << 20;
