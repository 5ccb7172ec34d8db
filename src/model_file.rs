//! Model files: safetensors (read and written by Hugging Face's `safetensors` crate) with
//! PyTorch's `nn.Linear` names and layouts, plus metadata that fully describes the model
//! (architecture, keep probabilities, scaling, seed, loss) and, in files written by `train`, the
//! state needed to resume training bit for bit.
//!
//! Tensors: `layers.N.weight` [out, in] and `layers.N.bias` [out], N counting dense layers from 0;
//! checkpoints add `optimizer.layers.N.weight.first` / `.second` (and the same for biases), for
//! every parameter or for none.
//!
//! A file dropnet writes, dropnet reads: [`encode`] runs the bytes it made through [`parse`], the
//! same validation [`load`] applies, before [`save`] writes them. The crate checks the header's
//! JSON, dtypes, shapes and that the tensors' offsets tile the data exactly; this module adds a
//! cap on the header, a refusal of duplicate keys (which the crate's map would silently merge),
//! the `format` value, and the checks of the model itself (limits, finite values, a complete
//! optimizer state, a valid standardisation and training state).

use crate::activation::Activation;
use crate::data::Standardization;
use crate::dropout::{Keep, Scaling};
use crate::error::{file_error, Error, Result};
use crate::files::{read_bounded, write_atomically};
use crate::limits::{MAX_MODEL_FILE_BYTES, MAX_MODEL_HEADER_BYTES};
use crate::loss::Loss;
use crate::network::{check_sizes, Architecture, Init, Network};
use crate::optim::Slots;
use crate::train::TrainState;
use safetensors::tensor::{Dtype, Metadata, SafeTensorError, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "dropnet-model-1";

/// The architecture as stored in the `architecture` metadata key (JSON).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchMeta {
    sizes: Vec<usize>,
    activations: Vec<Activation>,
    /// Per dense layer, the keep probability of each input unit.
    keep: Vec<Vec<f64>>,
    scaling: Scaling,
}

/// A model read from a file.
pub struct Saved {
    pub net: Network<f32>,
    pub loss: Loss,
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
}

fn arch_meta(net: &Network<f32>) -> ArchMeta {
    let layers = net.layers();
    let mut sizes = vec![net.inputs()];
    sizes.extend(layers.iter().map(|l| l.outputs()));
    ArchMeta {
        sizes,
        activations: layers.iter().map(|l| l.activation).collect(),
        keep: layers.iter().map(|l| l.dropout.keep().values().to_vec()).collect(),
        scaling: layers[0].dropout.scaling(),
    }
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
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (index, p) in params.iter().enumerate() {
        let shape = if p.name.ends_with(".bias") { vec![p.shape.0] } else { vec![p.shape.0, p.shape.1] };
        let mut named = vec![(p.name.clone(), p.value)];
        if let Some(slot) = extras.slots.get(index).filter(|_| extras.slots.len() == params.len()) {
            named.push((format!("optimizer.{}.first", p.name), &slot.first));
            named.push((format!("optimizer.{}.second", p.name), &slot.second));
        }
        for (name, values) in named {
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(Error::NotFinite { what: format!("{name} (nothing was written)"), value: *v as f64 });
            }
            tensors.push((name, shape.clone(), f32_bytes(values)));
        }
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), FORMAT.to_string());
    metadata.insert("architecture".to_string(), json(&arch_meta(net)));
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

/// The crate writes the metadata map in hash order, which differs from run to run. Rewrite it in
/// key order, so that the same model always gives the same bytes: the crate's header starts with
/// `{"__metadata__":` and the map; the sorted map has the same entries, hence the same length.
fn sort_metadata(bytes: &mut [u8], metadata: &BTreeMap<String, String>) -> Result<()> {
    const START: &[u8] = b"{\"__metadata__\":";
    let sorted = json(metadata);
    let at = 8 + START.len();
    let end = at + sorted.len();
    let region = bytes.get(at..end).filter(|_| bytes[8..].starts_with(START));
    let same =
        region.and_then(|r| serde_json::from_slice::<BTreeMap<String, String>>(r).ok()).as_ref() == Some(metadata);
    if !same {
        return Err(Error::Config("cannot encode the model: the safetensors header has an unexpected layout".into()));
    }
    bytes[at..end].copy_from_slice(sorted.as_bytes());
    Ok(())
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
    if format != FORMAT {
        return Err(bad(format!("format is '{format}', but this dropnet reads '{FORMAT}'")));
    }
    let arch: ArchMeta = serde_json::from_str(get("architecture")?)
        .map_err(|e| bad(format!("metadata 'architecture' is invalid ({e})")))?;
    let architecture = architecture(&arch).map_err(|e| bad(e.to_string()))?;
    let seed: u64 = get("seed")?.parse().map_err(|_| bad("metadata 'seed' is not an unsigned integer".into()))?;
    let loss: Loss = get("loss")?.parse().map_err(|e: Error| bad(e.to_string()))?;
    // The table is checked against the architecture before the network is built: a small file
    // whose metadata declares a huge network then fails here, before anything is allocated (a
    // tensor that is present has its bytes in the file, the crate checked that).
    let shapes = tensor_shapes(&arch.sizes);
    let with_slots = check_table(&table, &shapes).map_err(&bad)?;
    let mut net = Network::<f32>::new(&architecture, seed).map_err(|e| bad(e.to_string()))?;
    let slots = read_tensors(&mut net, &table, data, &shapes, with_slots).map_err(&bad)?;
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
    Ok(Saved { net, loss, training, slots, standardization, metadata })
}

/// The header's length after checks the crate does not make: a cap on its size, and no key twice
/// (in the tensor table or in the metadata).
fn check_header(bytes: &[u8]) -> std::result::Result<usize, String> {
    let Some(len) = bytes.get(..8) else {
        return Err(format!("{} bytes: too short for a safetensors file", bytes.len()));
    };
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    if len > MAX_MODEL_HEADER_BYTES as u64 {
        return Err(format!("the header claims {len} bytes, more than the {MAX_MODEL_HEADER_BYTES} dropnet reads"));
    }
    let len = len as usize;
    let header = bytes
        .get(8..8 + len)
        .ok_or_else(|| format!("truncated: the header claims {len} bytes, the file has {}", bytes.len() - 8))?;
    let mut de = serde_json::Deserializer::from_slice(header);
    serde::de::DeserializeSeed::deserialize(UniqueKeys { nested: true }, &mut de)
        .map_err(|e| format!("the safetensors header is invalid: {e}"))?;
    Ok(len)
}

/// Walks a JSON object and fails on a key that appears twice; with `nested`, checks the object
/// under `__metadata__` the same way.
struct UniqueKeys {
    nested: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if self.nested && key == "__metadata__" {
                map.next_value_seed(UniqueKeys { nested: false })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("the key '{key}' appears twice")));
            }
        }
        Ok(())
    }
}

/// A message for an error of the safetensors crate.
fn describe(e: SafeTensorError) -> String {
    match e {
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor {name}: its data offsets overlap another tensor's or leave a gap")
        }
        SafeTensorError::TensorInvalidInfo => "a tensor's data offsets do not match its shape and dtype".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensors do not cover the file's data exactly (bytes missing or left over)".into()
        }
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows".into(),
        other => format!("not a valid safetensors file ({other})"),
    }
}

/// The architecture the metadata describes, checked against the limits.
fn architecture(arch: &ArchMeta) -> Result<Architecture> {
    check_sizes(&arch.sizes)?;
    let layers = arch.sizes.len() - 1;
    if arch.activations.len() != layers || arch.keep.len() != layers {
        return Err(Error::Config(format!(
            "metadata architecture is inconsistent: {} sizes, {} activations, {} keep vectors",
            arch.sizes.len(),
            arch.activations.len(),
            arch.keep.len()
        )));
    }
    let keep = arch
        .keep
        .iter()
        .enumerate()
        .map(|(l, k)| {
            if k.len() != arch.sizes[l] {
                return Err(Error::Config(format!(
                    "layer {l} has {} inputs but {} keep values",
                    arch.sizes[l],
                    k.len()
                )));
            }
            Keep::of_layer(k.clone(), l)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Architecture {
        sizes: arch.sizes.clone(),
        activations: arch.activations.clone(),
        keep,
        scaling: arch.scaling,
        init: Init::He,
    })
}

/// Name and shape of every parameter tensor of a network of `sizes`, in parameter order.
fn tensor_shapes(sizes: &[usize]) -> Vec<(String, Vec<usize>)> {
    sizes
        .windows(2)
        .enumerate()
        .flat_map(|(l, pair)| {
            [(format!("layers.{l}.weight"), vec![pair[1], pair[0]]), (format!("layers.{l}.bias"), vec![pair[1]])]
        })
        .collect()
}

/// The names of a parameter's two optimizer slots.
fn slot_names(name: &str) -> [String; 2] {
    ["first", "second"].map(|w| format!("optimizer.{name}.{w}"))
}

/// Check that the file's tensors are exactly those of `shapes` (F32, each shape as given), with
/// the optimizer state for every parameter or for none; whether it has the optimizer state.
fn check_table(table: &Metadata, shapes: &[(String, Vec<usize>)]) -> std::result::Result<bool, String> {
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
    for (name, shape) in shapes {
        if !check(name, shape)? {
            return Err(format!("tensor {name} is missing"));
        }
        let [first, second] = slot_names(name);
        let present = match (check(&first, shape)?, check(&second, shape)?) {
            (true, true) => true,
            (false, false) => false,
            (true, false) => return Err(format!("tensor {second} is missing (its .first is there)")),
            (false, true) => return Err(format!("tensor {first} is missing (its .second is there)")),
        };
        if *with_slots.get_or_insert(present) != present {
            let missing = if present { &shapes[0].0 } else { name };
            return Err(format!(
                "the optimizer state is incomplete: optimizer.{missing}.first is missing, others are there"
            ));
        }
        expected.extend([name.clone(), first, second]);
    }
    if let Some(extra) = table.offset_keys().into_iter().find(|k| !expected.contains(k)) {
        return Err(format!("tensor {extra} is not part of the architecture in the metadata"));
    }
    Ok(with_slots.unwrap_or(false))
}

/// Copy every tensor of `shapes` into `net` (the table was checked by [`check_table`]); return the
/// optimizer state, when the file has it. A value that is not finite is an error naming its tensor.
fn read_tensors(
    net: &mut Network<f32>,
    table: &Metadata,
    data: &[u8],
    shapes: &[(String, Vec<usize>)],
    with_slots: bool,
) -> std::result::Result<Vec<Slots>, String> {
    let values = |name: &str| -> std::result::Result<Vec<f32>, String> {
        let (begin, end) = table.info(name).ok_or_else(|| format!("tensor {name} is missing"))?.data_offsets;
        let values: Vec<f32> =
            data[begin..end].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
        match values.iter().find(|v| !v.is_finite()) {
            Some(v) => Err(format!("tensor {name} holds {v}")),
            None => Ok(values),
        }
    };
    let mut slots = Vec::new();
    for (index, (name, _)) in shapes.iter().enumerate() {
        net.param_values_mut(index).copy_from_slice(&values(name)?);
        if with_slots {
            let [first, second] = slot_names(name);
            slots.push(Slots { first: values(&first)?, second: values(&second)? });
        }
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{OptimConfig, Optimizer};
    use crate::train::first_non_finite;

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
            Extras { loss: Loss::SoftmaxCrossEntropy, training: None, standardization: None, slots }
        }
        let (net, mut slots) = small();
        assert!(encode(&net, &extras(&slots)).is_ok());
        slots[1].second[0] = f32::INFINITY;
        let err = encode(&net, &extras(&slots)).unwrap_err().to_string();
        assert!(err.contains("optimizer.layers.0.bias.second") && err.contains("nothing was written"), "{err}");
        // and the training loop names the same value as a divergence
        let mut opt = Optimizer::new(OptimConfig::default()).unwrap();
        opt.slots = slots;
        assert!(first_non_finite(&net, &opt).unwrap().contains("optimizer.layers.0.bias.second holds inf"));
    }
}
