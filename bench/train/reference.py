"""PyTorch reference for the training benchmark.

Trains the same CNN as `mnistctl train` (same layers, PyTorch's default
initialisation, which ours reproduces; same optimiser, batch size, epochs,
5,000-image validation split and evaluation batch size) with a standard
PyTorch Dataset + DataLoader loop like the seed project's: images are
converted and normalised per item (ToTensor + Normalize), batched by the
DataLoader, and each epoch is a training pass plus a validation pass.

Prints one JSON object with seconds per epoch and the test accuracy.
"""
import argparse, gzip, json, os, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

MEAN, STD = 0.1307, 0.3081


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    n = int.from_bytes(data[4:8], "big")
    if magic == 2051:
        return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 28, 28)
    return np.frombuffer(data, dtype=np.uint8, offset=8)


def find(data_dir, name):
    for cand in (name, name + ".gz"):
        p = os.path.join(data_dir, cand)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(name)


class Mnist(Dataset):
    """Like torchvision's MNIST with ToTensor() + Normalize((0.1307,), (0.3081,))."""

    def __init__(self, data_dir, train, limit=None):
        prefix = "train" if train else "t10k"
        self.images = read_idx(find(data_dir, f"{prefix}-images-idx3-ubyte"))
        self.labels = read_idx(find(data_dir, f"{prefix}-labels-idx1-ubyte"))
        if limit:
            self.images, self.labels = self.images[:limit], self.labels[:limit]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = torch.from_numpy(self.images[i].copy()).float().div_(255.0).unsqueeze_(0)
        x = (x - MEAN) / STD
        return x, int(self.labels[i])


class Net(nn.Module):
    def __init__(self, c1=32, c2=64, fc=128, d1=0.25, d2=0.5):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.fc1 = nn.Linear(c2 * 7 * 7, fc)
        self.fc2 = nn.Linear(fc, 10)
        self.d1, self.d2 = d1, d2

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.dropout(x, self.d1, self.training)
        x = torch.flatten(x, 1)
        x = F.dropout(F.relu(self.fc1(x)), self.d2, self.training)
        return F.log_softmax(self.fc2(x), dim=1)


def evaluate(model, loader, dev):
    model.eval()
    loss, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            out = model(x)
            loss += F.nll_loss(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
    return loss / n, 100.0 * correct / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine",
                    help="cosine: CosineAnnealingLR(T_max=epochs) stepped per epoch, as `mnistctl train` does by default")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    full = Mnist(a.data_dir, True, a.train_limit)
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(a.seed)).tolist()
    val_set, train_set = Subset(full, perm[: a.val_size]), Subset(full, perm[a.val_size :])
    test_set = Mnist(a.data_dir, False)
    train_loader = DataLoader(train_set, batch_size=a.batch_size, shuffle=True, num_workers=a.num_workers)
    val_loader = DataLoader(val_set, batch_size=1000, num_workers=a.num_workers)
    test_loader = DataLoader(test_set, batch_size=1000, num_workers=a.num_workers)
    dev = torch.device(a.device)
    model = Net().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs) if a.lr_schedule == "cosine" else None
    epochs = []
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        for x, y in train_loader:
            x, y = x.to(dev), y.to(dev)
            opt.zero_grad()
            loss = F.nll_loss(model(x), y)
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
        val_loss, val_acc = evaluate(model, val_loader, dev)
        dt = time.perf_counter() - t0
        epochs.append({"epoch": epoch, "seconds": dt, "val_loss": val_loss, "val_accuracy": val_acc})
        print(json.dumps({"progress": epochs[-1]}), flush=True)
    test_loss, test_acc = evaluate(model, test_loader, dev)
    print(json.dumps({"torch": torch.__version__, "device": str(dev), "batch_size": a.batch_size, "threads": torch.get_num_threads(), "epochs": epochs,
                      "test_accuracy": test_acc, "test_loss": test_loss}))


if __name__ == "__main__":
    main()
