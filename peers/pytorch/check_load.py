# Loads a model file of recipes/mnist-cnn.toml into the nn.Sequential of docs/model-files.md and
# compares it with `dropnet predict` on the 10,000 MNIST test images (PyTorch is not a project
# dependency; this is the check that docs/model-files.md reports):
#   python check_load.py MODEL.safetensors MNIST_DIR DROPNET_BINARY
import gzip, json, subprocess, sys, numpy as np, torch
from torch import nn
from safetensors.torch import load_file
path, data, dropnet = sys.argv[1], sys.argv[2], sys.argv[3]
model = nn.Sequential(
    nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.1),   # 0, 1, 2, 3
    nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),                    # 4, 5, 6
    nn.Flatten(), nn.Dropout(0.5), nn.Linear(3136, 1024), nn.ReLU(),                # 7, 8, 9, 10
    nn.Dropout(0.5), nn.Linear(1024, 10),                                           # 11, 12
)
model.load_state_dict({k: v for k, v in load_file(path).items() if not k.startswith("optimizer.")})
model.eval()
with gzip.open(f"{data}/t10k-images-idx3-ubyte.gz") as f:
    x = torch.tensor(np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28), dtype=torch.float32) / 255
with gzip.open(f"{data}/t10k-labels-idx1-ubyte.gz") as f:
    y = torch.tensor(np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64))
with torch.no_grad():
    p = torch.softmax(model(x), 1)
out = subprocess.run([dropnet, "predict", "--model", path, "--data", data, "--json"],
                     capture_output=True, text=True, check=True).stdout
d = torch.tensor([json.loads(line)["mean"] for line in out.splitlines() if '"mean"' in line])
print(f"torch {torch.__version__}: test error {(p.argmax(1) != y).float().mean().item():.4f}, "
      f"largest probability difference to dropnet predict {(p - d).abs().max().item():.2e}, "
      f"same class {(p.argmax(1) == d.argmax(1)).sum().item()}/10000")
