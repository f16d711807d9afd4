"""digits-cnn: a small CNN trained on scikit-learn's 8x8 digits in seconds, for fast real tests.

It has a residual pair and a depthwise/pointwise pair on purpose, so pruning, low-rank and
quantization meet the same structures as in real mobile networks. Training is deterministic and
the result is cached in the user cache directory.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

VERSION = 1
SEED = 0


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        w, w2 = width, 2 * width
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.res_a = nn.Sequential(nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.res_b = nn.Sequential(nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w))
        self.down = nn.Sequential(nn.Conv2d(w, w2, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(w2), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(w2, w2, 3, padding=1, groups=w2, bias=False),
                                nn.BatchNorm2d(w2), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(w2, w2, 1, bias=False), nn.BatchNorm2d(w2), nn.ReLU())
        self.fc1 = nn.Linear(w2, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.res_b(self.res_a(x)))
        x = self.pw(self.dw(self.down(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc2(F.relu(self.fc1(x)))


def digits_arrays() -> dict[str, np.ndarray]:
    """The fixed split of sklearn's digits: 1347 train / 450 test, pixels scaled to 0-1."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target.astype(np.int64), test_size=450,
                                          random_state=SEED, stratify=d.target)
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}


def digits_npz(split: str) -> Path:
    """Path of the cached `.npz` (keys x, y) for split 'train' or 'test'; built on first use."""
    from edgecompress.paths import cached_file

    def write(tmp: Path) -> None:
        arrays = digits_arrays()
        with open(tmp, "wb") as f:
            np.savez(f, x=arrays[f"x_{split}"], y=arrays[f"y_{split}"])

    return cached_file(f"digits-{split}-v{VERSION}.npz", write, f"the digits {split} set")


def train_digits_cnn(epochs: int = 30, seed: int = SEED) -> DigitsCNN:
    """Train from scratch, deterministically (fixed seed, one thread, fixed batch order)."""
    arrays = digits_arrays()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = DigitsCNN()
        x, y = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * ((len(x) + 63) // 64))
        g = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), 64):
                idx = perm[i:i + 64]
                # Small random shifts make the model (and its int8 ranges) less brittle.
                xb = torch.roll(x[idx], shifts=tuple(torch.randint(-1, 2, (2,), generator=g).tolist()),
                                dims=(2, 3))
                loss = F.cross_entropy(model(xb), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def digits_cnn() -> DigitsCNN:
    """The trained digits CNN, from the cache or trained now (a few seconds)."""
    from edgecompress.errors import OutputError
    from edgecompress.fileio import atomic_path
    from edgecompress.paths import cache_path, in_cache, note_uncached

    path = cache_path(f"digits-cnn-v{VERSION}.pt", "the trained digits-cnn")
    model = DigitsCNN()
    if in_cache(path):
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception:  # a corrupt cache entry is rebuilt, not fatal
            with contextlib.suppress(OSError):  # in a read-only cache it stays; we train anyway
                path.unlink(missing_ok=True)
    model = train_digits_cnn()
    try:
        with atomic_path(path) as tmp:
            torch.save(model.state_dict(), tmp)
    except (OSError, OutputError) as e:
        note_uncached(path, "the trained digits-cnn", e)
    return model
