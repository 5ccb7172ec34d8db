"""Reads dropnet model files with numpy and safetensors alone and checks them against `dropnet predict`.

    python tests/python/check_model_file.py --dropnet target/release/dropnet --data data/mnist

For each network below, dropnet trains one epoch on MNIST and writes a model file; this script then
rebuilds the network from the file as docs/model-files.md describes it (the `architecture`
metadata, tensors named by nn.Sequential's numbering, PyTorch layouts: conv weights
[out, in, kh, kw], dense columns after `flatten` in (c, h, w) order), runs the evaluation-mode
forward pass in numpy on MNIST test images, and compares its class probabilities with those of
`dropnet predict --json`. Nothing here comes from dropnet's own code. Exits 1 on a mismatch.
"""

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors import safe_open

# Every layer kind, both noise kinds and both scalings; strides, paddings and pools that do not
# divide their maps evenly.
NETWORKS = [
    ("inverted", "1x28x28,conv6k5p2,relu,maxpool2,spatial0.8,conv12k3s2p1,tanh,avgpool3s2,"
                 "flatten,keep0.5,dense20,sigmoid,dense10"),
    ("standard", "1x28x28,keep0.9,conv4k3,elu,maxpool3s2,conv8k3p2,leakyrelu,flatten,keep0.5,"
                 "dense16,selu,keep0.8,dense16,gelu,dense10"),
]
EXAMPLES = 300
# The forward pass in f32 by dropnet and in f64 here: probabilities agree to f32 rounding
# amplified by a few thousand summed products, far below the 1e-4 allowed.
TOLERANCE = 1e-4


def read_idx_images(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def conv2d(x, w, b, stride, padding):
    n, cin, h, wd = x.shape
    cout, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
    out = np.zeros((n, cout, oh, ow))
    for kh in range(k):
        for kw in range(k):
            window = xp[:, :, kh: kh + stride * (oh - 1) + 1: stride, kw: kw + stride * (ow - 1) + 1: stride]
            out += np.einsum("nchw,oc->nohw", window, w[:, :, kh, kw])
    return out + b[None, :, None, None]


def pool(x, kind, k, stride):
    n, c, h, w = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    windows = [x[:, :, kh: kh + stride * (oh - 1) + 1: stride, kw: kw + stride * (ow - 1) + 1: stride]
               for kh in range(k) for kw in range(k)]
    stacked = np.stack(windows)
    return stacked.max(axis=0) if kind == "maxpool" else stacked.mean(axis=0)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def activation(name, z):
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leaky-relu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "elu":
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))
    if name == "selu":
        alpha, scale = 1.6732632423543772, 1.0507009873554805
        return scale * np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))
    if name == "gelu":
        return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))
    if name == "softmax":
        return softmax(z)
    raise SystemExit(f"check_model_file: activation {name!r} is not known to this check")


def noise_eval(x, layer):
    """Evaluation mode: inverted dropout is the identity; standard dropout scales by keep."""
    if layer["scaling"] == "inverted":
        return x
    keep = np.asarray(layer["keep"], dtype=np.float64)
    if keep.size == 1:
        return x * keep[0]
    if layer["noise"] == "spatial":
        return x * keep[None, :, None, None]
    if x.ndim == 2:
        return x * keep
    raise SystemExit("check_model_file: per-unit keep vectors on feature maps are not known to this check")


def forward(path, images):
    with safe_open(path, "np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k).astype(np.float64) for k in f.keys() if not k.startswith("optimizer.")}
    arch = json.loads(meta["architecture"])
    x = images.reshape([len(images)] + arch["input"]).astype(np.float64) / 255.0
    used = set()
    for module, layer in enumerate(arch["layers"]):
        kind = layer["kind"]
        if kind in ("conv", "dense"):
            w, b = tensors[f"{module}.weight"], tensors[f"{module}.bias"]
            used |= {f"{module}.weight", f"{module}.bias"}
            x = conv2d(x, w, b, layer["stride"], layer["padding"]) if kind == "conv" else x @ w.T + b
        elif kind in ("maxpool", "avgpool"):
            x = pool(x, kind, layer["kernel"], layer["stride"])
        elif kind == "flatten":
            x = x.reshape(len(x), -1)  # numpy's C order of [N, C, H, W]: (c, h, w), as nn.Flatten
        elif kind == "activation":
            x = activation(layer["activation"], x)
        elif kind == "noise":
            x = noise_eval(x, layer)
        else:
            raise SystemExit(f"check_model_file: {path}: layer kind {kind!r} is not known to this check")
    if used != set(tensors):
        raise SystemExit(f"check_model_file: {path}: tensors {sorted(set(tensors) - used)} belong to no module")
    if meta["loss"] != "softmax-cross-entropy":
        raise SystemExit(f"check_model_file: {path}: loss {meta['loss']!r} is not known to this check")
    return softmax(x)


def run(command):
    """Runs a dropnet command; on failure shows its error output and exits 1."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"check_model_file: {' '.join(command)} exited with {done.returncode}")
    return done.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dropnet", required=True)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    images = read_idx_images(Path(args.data) / "t10k-images-idx3-ubyte.gz")[:EXAMPLES]
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for scaling, arch in NETWORKS:
            model = str(Path(tmp) / f"{scaling}.safetensors")
            run([args.dropnet, "--threads", "2", "train", "--data", args.data, "--arch", arch, "--scaling",
                 scaling, "--epochs", "1", "--lr", "0.05", "--seed", "7", "--out", model, "--json"])
            out = run([args.dropnet, "predict", "--model", model, "--data", args.data, "--limit", str(EXAMPLES),
                       "--json"])
            rows = [json.loads(line) for line in out.splitlines()]
            dropnet = np.array([r["mean"] for r in rows if "mean" in r])
            ours = forward(model, images)
            worst = float(np.abs(dropnet - ours).max())
            agree = int((dropnet.argmax(1) == ours.argmax(1)).sum())
            ok = dropnet.shape == ours.shape and worst <= TOLERANCE
            failed |= not ok
            print(f"{'ok' if ok else 'MISMATCH'}: {arch} ({scaling}): {EXAMPLES} examples, "
                  f"largest probability difference {worst:.2e}, same class {agree}/{EXAMPLES}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
