# W4 of the benchmark specification in PyTorch, for comparison (the project does not use it):
#   python w4.py THREADS cl|nchw MNIST_DIR     (cl: channels-last memory format)
# One timed epoch of SGD (momentum 0.9, lr 0.01, batch 128) after 20 warm-up steps, then the test
# error in evaluation mode, printed as one JSON line.
import gzip, sys, time, numpy as np, torch
from torch import nn
threads, layout = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(threads); torch.manual_seed(0)
def idx(p):
    with gzip.open(p) as f: d = f.read()
    nd = d[3]; dims = [int.from_bytes(d[4+4*i:8+4*i], 'big') for i in range(nd)]
    return np.frombuffer(d, np.uint8, offset=4+4*nd).reshape(dims)
D = sys.argv[3]
xtr = torch.tensor(idx(f"{D}/train-images-idx3-ubyte.gz"), dtype=torch.float32).div(255).reshape(-1,1,28,28)
ytr = torch.tensor(idx(f"{D}/train-labels-idx1-ubyte.gz").astype(np.int64))
xte = torch.tensor(idx(f"{D}/t10k-images-idx3-ubyte.gz"), dtype=torch.float32).div(255).reshape(-1,1,28,28)
yte = torch.tensor(idx(f"{D}/t10k-labels-idx1-ubyte.gz").astype(np.int64))
model = nn.Sequential(nn.Conv2d(1,32,5,padding=2), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32,64,5,padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    nn.Dropout(0.5), nn.Linear(3136,1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024,10))
mf = torch.channels_last if layout == "cl" else torch.contiguous_format
model = model.to(memory_format=mf)
if layout == "cl": xtr = xtr.contiguous(memory_format=mf); xte = xte.contiguous(memory_format=mf)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
def step(idxs):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(xtr[idxs]), ytr[idxs]); loss.backward(); opt.step()
perm = torch.randperm(60000)
for s in range(20): step(perm[s*128:(s+1)*128])
perm = torch.randperm(60000)
t0 = time.perf_counter()
for s in range(469): step(perm[s*128:(s+1)*128])
dt = time.perf_counter() - t0
model.eval()
with torch.no_grad():
    err = sum((model(xte[i:i+1000]).argmax(1) != yte[i:i+1000]).sum().item() for i in range(0,10000,1000)) / 10000
print(f'{{"torch": "{torch.__version__}", "threads": {threads}, "layout": "{layout}", "samples_per_s": {60000/dt:.1f}, "test_error": {err}}}')
