//! Model files: safetensors with PyTorch's `nn.Linear` names and layouts, plus metadata that fully
//! describes the model (architecture, keep probabilities, scaling, seed, loss) and, in files written
//! by `train`, the state needed to resume training bit for bit.
//!
//! Layout of a safetensors file: an 8-byte little-endian header length N, N bytes of JSON header
//! (`{"__metadata__": {..strings..}, "layers.0.weight": {"dtype": "F32", "shape": [out, in],
//! "data_offsets": [begin, end]}, ...}`), then the tensor bytes (little-endian f32).
//! Tensors: `layers.N.weight` [out, in] and `layers.N.bias` [out], N counting dense layers from 0;
//! checkpoints add `optimizer.layers.N.weight.first` / `.second` (and the same for biases).

use crate::activation::Activation;
use crate::dropout::{Keep, Scaling};
use crate::error::{file_error, io_error, Error, Result};
use crate::loss::Loss;
use crate::network::{Architecture, Init, Network};
use crate::optim::Slots;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "dropnet-model-1";

/// The architecture as stored in the `architecture` metadata key (JSON).
#[derive(Serialize, Deserialize)]
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
    /// The `training` metadata (JSON) of files written by `train`.
    pub training: Option<String>,
    /// Optimizer state per parameter tensor (empty when the file has none).
    pub slots: Vec<Slots>,
    pub metadata: BTreeMap<String, String>,
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

/// Write `net`, `extra` metadata (e.g. `training`: the JSON state of a run) and optimizer `slots`
/// to `path` atomically: the bytes go to a temporary file in the same folder, which then replaces
/// `path`. Nothing is written when a parameter is not finite.
pub fn save(path: &Path, net: &Network<f32>, loss: Loss, extra: &[(&str, String)], slots: &[Slots]) -> Result<()> {
    for p in net.params() {
        if let Some(v) = p.value.iter().find(|v| !v.is_finite()) {
            return Err(Error::NotFinite {
                what: format!("{} (not saved to {})", p.name, path.display()),
                value: *v as f64,
            });
        }
    }
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    for p in net.params() {
        let shape = if p.name.ends_with(".bias") { vec![p.shape.0] } else { vec![p.shape.0, p.shape.1] };
        tensors.push((p.name, shape, p.value));
    }
    let names: Vec<(String, Vec<usize>)> = tensors.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect();
    for ((name, shape), slot) in names.iter().zip(slots) {
        if slot.first.len() == shape.iter().product::<usize>() {
            tensors.push((format!("optimizer.{name}.first"), shape.clone(), &slot.first));
            tensors.push((format!("optimizer.{name}.second"), shape.clone(), &slot.second));
        }
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), FORMAT.to_string());
    metadata.insert("architecture".to_string(), serde_json::to_string(&arch_meta(net)).expect("serialisable"));
    metadata.insert("seed".to_string(), net.seed().to_string());
    metadata.insert("loss".to_string(), loss.name().to_string());
    for (key, value) in extra {
        metadata.insert(key.to_string(), value.clone());
    }
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(&metadata).expect("serialisable"));
    let mut offset = 0usize;
    for (name, shape, values) in &tensors {
        let end = offset + 4 * values.len();
        header.insert(name.clone(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}));
        offset = end;
    }
    let mut header = serde_json::to_vec(&header).expect("serialisable");
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    for (_, _, values) in &tensors {
        for v in values.iter() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    write_atomically(path, &bytes)
}

/// Write `bytes` to a temporary file beside `path`, flush it to disk, then rename it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| file_error(path, "not a file name"))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(path, e)
    })
}

#[derive(Deserialize)]
struct TensorInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// Read a model file written by [`save`] (or any safetensors file with the same names and metadata).
pub fn load(path: &Path) -> Result<Saved> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let bad = |message: String| file_error(path, message);
    if bytes.len() < 8 {
        return Err(bad(format!("truncated: {} bytes, not a safetensors file", bytes.len())));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    if header_len > bytes.len() - 8 {
        return Err(bad(format!("truncated: the header claims {header_len} bytes, the file has {}", bytes.len() - 8)));
    }
    let data = &bytes[8 + header_len..];
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + header_len])
        .map_err(|e| bad(format!("the safetensors header is not valid JSON ({e})")))?;
    let metadata: BTreeMap<String, String> = match header.remove("__metadata__") {
        Some(m) => serde_json::from_value(m).map_err(|e| bad(format!("__metadata__ is not a string map ({e})")))?,
        None => return Err(bad("no __metadata__: not a dropnet model file".into())),
    };
    let arch_json = metadata.get("architecture").ok_or_else(|| bad("metadata has no architecture".into()))?;
    let arch: ArchMeta =
        serde_json::from_str(arch_json).map_err(|e| bad(format!("metadata 'architecture' is invalid ({e})")))?;
    let seed: u64 =
        metadata.get("seed").and_then(|s| s.parse().ok()).ok_or_else(|| bad("metadata has no numeric seed".into()))?;
    let loss: Loss = metadata.get("loss").map(|s| s.parse()).transpose()?.unwrap_or_default();

    let mut tensor = |name: &str, shape: &[usize]| -> Result<Option<Vec<f32>>> {
        let Some(info) = header.remove(name) else { return Ok(None) };
        let info: TensorInfo =
            serde_json::from_value(info).map_err(|e| bad(format!("tensor {name}: bad header entry ({e})")))?;
        if info.dtype != "F32" {
            return Err(bad(format!("tensor {name} is {}, only F32 is supported", info.dtype)));
        }
        if info.shape != shape {
            return Err(bad(format!(
                "tensor {name} has shape {:?} but the metadata's architecture needs {shape:?}",
                info.shape
            )));
        }
        let [begin, end] = info.data_offsets;
        if begin > end || end > data.len() || end - begin != 4 * shape.iter().product::<usize>() {
            return Err(bad(format!(
                "tensor {name}: data offsets [{begin}, {end}] do not fit its shape or the file ({} data bytes)",
                data.len()
            )));
        }
        let values: Vec<f32> =
            data[begin..end].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(bad(format!("tensor {name} holds {v}")));
        }
        Ok(Some(values))
    };

    let layers = arch.sizes.len().saturating_sub(1);
    if layers == 0 || arch.activations.len() != layers || arch.keep.len() != layers {
        return Err(bad(format!(
            "metadata architecture is inconsistent: {} sizes, {} activations, {} keep vectors",
            arch.sizes.len(),
            arch.activations.len(),
            arch.keep.len()
        )));
    }
    let keep = arch
        .keep
        .iter()
        .map(|k| Keep::per_unit(k.clone()))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| bad(e.to_string()))?;
    let architecture = Architecture {
        sizes: arch.sizes.clone(),
        activations: arch.activations.clone(),
        keep,
        scaling: arch.scaling,
        init: Init::He,
    };
    let mut net = Network::<f32>::new(&architecture, seed).map_err(|e| bad(e.to_string()))?;
    let mut slots = Vec::new();
    for l in 0..layers {
        let (inputs, outputs) = (arch.sizes[l], arch.sizes[l + 1]);
        for (name, shape) in
            [(format!("layers.{l}.weight"), vec![outputs, inputs]), (format!("layers.{l}.bias"), vec![outputs])]
        {
            let values = tensor(&name, &shape)?.ok_or_else(|| bad(format!("tensor {name} is missing")))?;
            let index = if name.ends_with("weight") { 2 * l } else { 2 * l + 1 };
            net.param_values_mut(index).copy_from_slice(&values);
            let first = tensor(&format!("optimizer.{name}.first"), &shape)?;
            let second = tensor(&format!("optimizer.{name}.second"), &shape)?;
            if let (Some(first), Some(second)) = (first, second) {
                slots.push(Slots { first, second });
            }
        }
    }
    if slots.len() != 2 * layers {
        slots.clear();
    }
    if let Some(extra) = header.keys().next() {
        return Err(bad(format!("tensor {extra} is not part of the architecture in the metadata")));
    }
    Ok(Saved { net, loss, training: metadata.get("training").cloned(), slots, metadata })
}
