# W5 of the benchmark specification in PyTorch, for comparison (the project does not use it):
#   python w5.py THREADS BATCH MNIST_DIR
# T = 50 dropout samples of the W1 network for the 10,000 MNIST test
# images, dropout modules in train mode under no_grad, each batch repeated T times.
import gzip, sys, time, numpy as np, torch
from torch import nn
threads, batch = int(sys.argv[1]), int(sys.argv[2]); D = sys.argv[3]
torch.set_num_threads(threads); torch.manual_seed(0)
with gzip.open(f"{D}/t10k-images-idx3-ubyte.gz") as f: raw = f.read()
x = torch.tensor(np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784), dtype=torch.float32) / 255
T = 50
model = nn.Sequential(nn.Dropout(0.2), nn.Linear(784, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 10))
model.train()
def run(xs):
    out = []
    with torch.no_grad():
        for i in range(0, len(xs), batch):
            b = xs[i:i + batch]
            p = torch.softmax(model(b.repeat(T, 1)), 1).reshape(T, len(b), 10).mean(0)
            out.append(p)
    return torch.cat(out)
run(x[:batch])
t0 = time.perf_counter(); p = run(x); dt = time.perf_counter() - t0
print(f'{{"torch": "{torch.__version__}", "threads": {threads}, "batch": {batch}, "examples_per_s": {len(x)/dt:.1f}}}')
