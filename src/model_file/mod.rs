//! Model files: safetensors (read and written by Hugging Face's `safetensors` crate) whose tensors
//! load into the equivalent PyTorch `nn.Sequential` as they are, and whose metadata fully describes
//! the model (its stack of layers, seed, loss, task) and, in files written by `train`, the state
//! needed to resume training bit for bit. `docs/model-files.md` describes the format.
//!
//! Tensors: `N.weight` and `N.bias` for the dense layer or convolution that is module N of the
//! stack, in PyTorch's layouts (`layout`), and for checkpoints `optimizer.N.weight.first` /
//! `.second` (and the same for biases), for every parameter or for none.
//!
//! A file dropnet writes, dropnet reads: [`encode`] runs the bytes it made through [`parse`], the
//! same validation [`load`] applies, before [`save`] writes them. The crate checks the header's
//! JSON, dtypes, shapes and that the tensors' offsets tile the data exactly; `header` adds a cap on
//! the header, a refusal of duplicate keys (which the crate's map would silently merge), and the
//! metadata in key order; this module adds the `format`, the checks of the model itself (limits,
//! finite values, a complete optimizer state, a valid standardisation and training state), and the
//! check of the tensor table against the stack before anything is allocated. Files of the first
//! format (`dropnet-model-1`, an MLP with `layers.L` names) are read too.

mod header;
mod layout;
mod task;

pub use task::{Regression, Task};

use crate::data::Standardization;
use crate::error::{file_error, Error, Result};
use crate::files::{read_bounded, write_atomically};
use crate::layer::plan;
use crate::limits::MAX_MODEL_FILE_BYTES;
use crate::loss::Loss;
use crate::network::{Architecture, Network};
use crate::optim::Slots;
use crate::train::TrainState;
use header::{check_header, describe, sort_metadata};
use layout::{file_tensors, ArchJson, ArchV1, FileTensor};
use safetensors::tensor::{Dtype, Metadata, SafeTensorError, SafeTensors, TensorView};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Value of the `format` metadata key of the files dropnet writes.
pub const FORMAT: &str = "dropnet-model-2";
/// The first format, still read.
pub const FORMAT_V1: &str = "dropnet-model-1";

/// A model read from a file.
pub struct Saved {
    pub net: Network<f32>,
    pub loss: Loss,
    /// The targets of a regression model (`None`: classification).
    pub regression: Option<Regression>,
    /// The state of the run, in files written by `dropnet train`.
    pub training: Option<TrainState>,
    /// Optimizer state per parameter tensor (empty when the file has none).
    pub slots: Vec<Slots>,
    /// The feature scaling the model was trained with.
    pub standardization: Option<Standardization>,
    pub metadata: BTreeMap<String, String>,
}

/// What [`encode`] writes besides the network.
pub struct Extras<'a> {
    pub loss: Loss,
    pub training: Option<&'a TrainState>,
    pub standardization: Option<&'a Standardization>,
    pub slots: &'a [Slots],
    /// The targets of a regression model (`None`: classification).
    pub regression: Option<&'a Regression>,
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

/// Little-endian bytes of `values`.
fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The bytes of a model file for `net` and `extras`: validated by [`parse`] before they are
/// returned, and the same bytes for the same model. A parameter or optimizer value that is not
/// finite is an error naming it.
pub fn encode(net: &Network<f32>, extras: &Extras<'_>) -> Result<Vec<u8>> {
    let params = net.params();
    let layout = file_tensors(net.plans(), false);
    let with_slots = extras.slots.len() == params.len();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (index, (p, t)) in params.iter().zip(&layout).enumerate() {
        let mut named = vec![(t.name.clone(), p.value)];
        if with_slots {
            let slot = &extras.slots[index];
            named.push((format!("optimizer.{}.first", t.name), &slot.first));
            named.push((format!("optimizer.{}.second", t.name), &slot.second));
        }
        for (name, values) in named {
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(Error::NotFinite { what: format!("{name} (nothing was written)"), value: *v as f64 });
            }
            tensors.push((name, t.shape.clone(), f32_bytes(&t.layout.to_file(values))));
        }
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), FORMAT.to_string());
    metadata.insert("architecture".to_string(), json(&ArchJson::of(net.stack())));
    task::write(&mut metadata, extras.regression);
    metadata.insert("seed".to_string(), net.seed().to_string());
    metadata.insert("loss".to_string(), extras.loss.name().to_string());
    if let Some(s) = extras.standardization {
        metadata.insert("standardization".to_string(), json(s));
    }
    if let Some(t) = extras.training {
        metadata.insert("training".to_string(), json(t));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| Ok((name.as_str(), TensorView::new(Dtype::F32, shape.clone(), bytes)?)))
        .collect::<std::result::Result<Vec<_>, SafeTensorError>>()
        .map_err(|e| Error::Config(format!("cannot encode the model: {e}")))?;
    let unordered: HashMap<String, String> = metadata.clone().into_iter().collect();
    let mut bytes = safetensors::serialize(views, Some(unordered))
        .map_err(|e| Error::Config(format!("cannot encode the model: {e}")))?;
    sort_metadata(&mut bytes, &metadata)?;
    parse(&bytes, Path::new("(the file about to be written)"))
        .map_err(|e| Error::Config(format!("dropnet made a model file it would not read back: {e}")))?;
    Ok(bytes)
}

/// Write a model file atomically (see [`crate::files::write_atomically`]); nothing is written when
/// [`encode`] fails.
pub fn save(path: &Path, net: &Network<f32>, extras: &Extras<'_>) -> Result<()> {
    write_atomically(path, &encode(net, extras)?)
}

/// Read and validate a model file (at most [`MAX_MODEL_FILE_BYTES`] bytes, a regular file).
pub fn load(path: &Path) -> Result<Saved> {
    parse(&read_bounded(path, MAX_MODEL_FILE_BYTES)?, path)
}

/// Parse and validate the bytes of a model file; `origin` names it in messages.
pub fn parse(bytes: &[u8], origin: &Path) -> Result<Saved> {
    let bad = |message: String| file_error(origin, message);
    let header_len = check_header(bytes).map_err(&bad)?;
    let (_, table) = SafeTensors::read_metadata(bytes).map_err(|e| bad(describe(e)))?;
    let data = &bytes[8 + header_len..];
    let metadata: BTreeMap<String, String> = table
        .metadata()
        .clone()
        .ok_or_else(|| bad("no __metadata__: not a dropnet model file".into()))?
        .into_iter()
        .collect();
    let get = |key: &str| metadata.get(key).ok_or_else(|| bad(format!("metadata has no '{key}'")));
    let format = get("format")?;
    let arch_text = get("architecture")?;
    let invalid = |e: serde_json::Error| bad(format!("metadata 'architecture' is invalid ({e})"));
    let (stack, v1) = match format.as_str() {
        FORMAT => (serde_json::from_str::<ArchJson>(arch_text).map_err(invalid)?.stack().map_err(&bad)?, false),
        FORMAT_V1 => (serde_json::from_str::<ArchV1>(arch_text).map_err(invalid)?.stack().map_err(&bad)?, true),
        other => return Err(bad(format!("format is '{other}', but this dropnet reads '{FORMAT}' and '{FORMAT_V1}'"))),
    };
    let seed: u64 = get("seed")?.parse().map_err(|_| bad("metadata 'seed' is not an unsigned integer".into()))?;
    let loss: Loss = get("loss")?.parse().map_err(|e: Error| bad(e.to_string()))?;
    // The table is checked against the stack before the network is built: a small file whose
    // metadata declares a huge network then fails here, before anything is allocated (a tensor that
    // is present has its bytes in the file, the crate checked that).
    let plans = plan(&stack).map_err(|e| bad(e.to_string()))?;
    let tensors = file_tensors(&plans, v1);
    let with_slots = check_table(&table, &tensors).map_err(&bad)?;
    let mut net = Network::<f32>::new(&Architecture::new(stack), seed).map_err(|e| bad(e.to_string()))?;
    // what train refuses no file may hold: a softmax output under a loss that takes logits would
    // apply softmax twice, with wrong probabilities and calibration figures
    loss.check_output_activation(net.output_activation())
        .map_err(|e| bad(format!("metadata 'loss' and 'architecture' disagree: {e}")))?;
    let regression = task::read(&metadata, net.outputs(), loss).map_err(&bad)?;
    let slots = read_tensors(&mut net, &table, data, &tensors, with_slots).map_err(&bad)?;
    let standardization = match metadata.get("standardization") {
        Some(text) => {
            let s: Standardization =
                serde_json::from_str(text).map_err(|e| bad(format!("metadata 'standardization' is invalid ({e})")))?;
            s.validate(net.inputs()).map_err(|e| bad(format!("metadata 'standardization': {e}")))?;
            Some(s)
        }
        None => None,
    };
    let training = match metadata.get("training") {
        Some(text) => {
            let t: TrainState =
                serde_json::from_str(text).map_err(|e| bad(format!("metadata 'training' is invalid ({e})")))?;
            t.validate().map_err(|e| bad(format!("metadata 'training': {e}")))?;
            Some(t)
        }
        None => None,
    };
    Ok(Saved { net, loss, regression, training, slots, standardization, metadata })
}

/// The names of a parameter's two optimizer slots.
fn slot_names(name: &str) -> [String; 2] {
    ["first", "second"].map(|w| format!("optimizer.{name}.{w}"))
}

/// Check that the file's tensors are exactly `tensors` (F32, each in its file shape), with the
/// optimizer state for every parameter or for none; whether it has the optimizer state.
fn check_table(table: &Metadata, tensors: &[FileTensor]) -> std::result::Result<bool, String> {
    let check = |name: &str, shape: &[usize]| -> std::result::Result<bool, String> {
        let Some(info) = table.info(name) else { return Ok(false) };
        if info.dtype != Dtype::F32 {
            return Err(format!("tensor {name} is {:?}, only F32 is supported", info.dtype));
        }
        if info.shape != shape {
            return Err(format!(
                "tensor {name} has shape {:?} but the metadata's architecture needs {shape:?}",
                info.shape
            ));
        }
        Ok(true)
    };
    let mut expected: Vec<String> = Vec::new();
    let mut with_slots = None;
    for t in tensors {
        if !check(&t.name, &t.shape)? {
            return Err(format!("tensor {} is missing", t.name));
        }
        let [first, second] = slot_names(&t.name);
        let present = match (check(&first, &t.shape)?, check(&second, &t.shape)?) {
            (true, true) => true,
            (false, false) => false,
            (true, false) => return Err(format!("tensor {second} is missing (its .first is there)")),
            (false, true) => return Err(format!("tensor {first} is missing (its .second is there)")),
        };
        if *with_slots.get_or_insert(present) != present {
            let missing = if present { &tensors[0].name } else { &t.name };
            return Err(format!(
                "the optimizer state is incomplete: optimizer.{missing}.first is missing, others are there"
            ));
        }
        expected.extend([t.name.clone(), first, second]);
    }
    if let Some(extra) = table.offset_keys().into_iter().find(|k| !expected.contains(k)) {
        return Err(format!("tensor {extra} is not part of the architecture in the metadata"));
    }
    Ok(with_slots.unwrap_or(false))
}

/// Copy every tensor into `net` in the layers' order (the table was checked by [`check_table`]);
/// return the optimizer state, when the file has it. A value that is not finite is an error
/// naming its tensor.
fn read_tensors(
    net: &mut Network<f32>,
    table: &Metadata,
    data: &[u8],
    tensors: &[FileTensor],
    with_slots: bool,
) -> std::result::Result<Vec<Slots>, String> {
    let values = |name: &str, t: &FileTensor| -> std::result::Result<Vec<f32>, String> {
        let (begin, end) = table.info(name).ok_or_else(|| format!("tensor {name} is missing"))?.data_offsets;
        let file: Vec<f32> =
            data[begin..end].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
        if let Some(v) = file.iter().find(|v| !v.is_finite()) {
            return Err(format!("tensor {name} holds {v}"));
        }
        let mut stored = vec![0.0; file.len()];
        t.layout.to_stored(&file, &mut stored);
        Ok(stored)
    };
    let mut slots = Vec::new();
    for (index, t) in tensors.iter().enumerate() {
        net.param_values_mut(index).copy_from_slice(&values(&t.name, t)?);
        if with_slots {
            let [first, second] = slot_names(&t.name);
            slots.push(Slots { first: values(&first, t)?, second: values(&second, t)? });
        }
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{OptimConfig, Optimizer};
    use crate::train::first_non_finite;
    use crate::{Activation, Scaling};

    fn small() -> (Network<f32>, Vec<Slots>) {
        let arch =
            Architecture::mlp(&[3, 2], Activation::Relu, Activation::Identity, &[0.8], Scaling::Inverted).unwrap();
        let net = Network::<f32>::new(&arch, 1).unwrap();
        let slots = net
            .params()
            .iter()
            .map(|p| Slots { first: vec![0.0; p.value.len()], second: vec![0.0; p.value.len()] })
            .collect();
        (net, slots)
    }

    #[test]
    fn a_model_with_non_finite_optimizer_state_is_not_encoded() {
        // dropnet used to save such a file and then refuse to read it.
        fn extras(slots: &[Slots]) -> Extras<'_> {
            Extras { loss: Loss::SoftmaxCrossEntropy, training: None, standardization: None, slots, regression: None }
        }
        let (net, mut slots) = small();
        assert!(encode(&net, &extras(&slots)).is_ok());
        slots[1].second[0] = f32::INFINITY;
        let err = encode(&net, &extras(&slots)).unwrap_err().to_string();
        assert!(err.contains("optimizer.1.bias.second") && err.contains("nothing was written"), "{err}");
        // and the training loop names the same value as a divergence
        let mut opt = Optimizer::new(OptimConfig::default()).unwrap();
        opt.slots = slots;
        assert!(first_non_finite(&net, &opt).unwrap().contains("optimizer.1.bias.second holds inf"));
    }
}
