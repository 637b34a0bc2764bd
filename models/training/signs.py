"""Train the 43-class GTSRB sign classifier on a sign crop dataset and export it to ONNX.

The dataset is the Parquet file ``pipelines.sign_dataset`` writes (simulator crops and
the real GTSRB training images; ``models.datasets.read_image_dataset`` reads it). The
network is a small CNN (about 114 k parameters at width 16) whose exported graph takes
what a camera gives, so callers need no preprocessing:

- input ``images``: uint8 ``[N, 32, 32, 3]``, BGR, as OpenCV crops it;
- output ``scores``: float32 ``[N, 43]``, softmax class probabilities.

Inside, each image is standardised by its own mean and spread (so exposure matters
little), then three conv blocks and a linear layer. Training draws every batch through
random affine warps, colour gains, blur and noise; the few real images are oversampled
(``real_repeat``) so they weigh as much as a few thousand simulator crops.

Run (needs the ``[train]`` extra, PyTorch CPU)::

    python -m pipelines.sign_dataset /tmp/signs                       # the dataset
    python -m models.training.signs /tmp/signs/signs.parquet models/artifacts/gtsrb-signs

It prints the accuracy on the dataset's held-out splits as a last-line JSON object.
PyTorch is imported inside the functions that need it: it is an optional extra, and
``models`` must import without it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.datasets import read_image_dataset

NUM_CLASSES = 43
INPUT_NAME, OUTPUT_NAME = "images", "scores"


@dataclass(frozen=True)
class TrainConfig:
    """How to train: epochs, batch size, peak learning rate, seed, label smoothing, network
    width, how many simulator crops each epoch draws and how often each real image repeats
    in it."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    label_smoothing: float = 0.05
    width: int = 16
    real_repeat: int = 25
    sim_per_epoch: int = 3500


def build_network(width: int = 16):
    """The untrained classifier (a ``torch.nn.Module`` taking uint8 NHWC BGR images);
    ``width`` channels in the first conv block, twice and four times that in the others."""
    import torch
    from torch import nn

    def block(c_in: int, c_out: int, convs: int) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for k in range(convs):
            layers += [nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]  # fmt: skip
        return [*layers, nn.MaxPool2d(2)]

    class SignNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.features = nn.Sequential(
                *block(3, w, 1), *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2)
            )
            self.head = nn.Sequential(
                nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * w * 16, NUM_CLASSES)
            )

        def logits(self, images: torch.Tensor) -> torch.Tensor:
            x = images.permute(0, 3, 1, 2).float()
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            spread = x.std(dim=(1, 2, 3), keepdim=True)
            return self.head(self.features((x - mean) / (spread + 8.0)))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.logits(images), dim=1)

    return SignNet()


def augment(images, generator):
    """Random warps, colour gains, blur and noise on a uint8 NHWC batch (returns uint8)."""
    import torch
    import torch.nn.functional as F

    n = images.shape[0]
    x = images.permute(0, 3, 1, 2).float()
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    angle = (rand(n) - 0.5) * math.radians(24)
    scale = 0.85 + 0.3 * rand(n)
    shear = (rand(n) - 0.5) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin + shear, (rand(n) - 0.5) * 0.2], 1),
         torch.stack([sin, cos, (rand(n) - 0.5) * 0.2], 1)], 1
    )  # fmt: skip
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    blur = rand(n) < 0.3
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    gain = (0.35 + 1.2 * rand(n, 1, 1, 1)) * (0.85 + 0.3 * rand(n, 3, 1, 1))
    x = x * gain + (rand(n, 1, 1, 1) - 0.4) * 50
    x = x + torch.randn(x.shape, generator=generator) * rand(n, 1, 1, 1) * 8
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def train(dataset: str | os.PathLike[str], config: TrainConfig = TrainConfig(), *, log=print):
    """Train on the dataset's ``train`` split; returns the network in eval mode."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    X_sim, y_sim = read_image_dataset(dataset, split="train", origin="sim")
    X_real, y_real = read_image_dataset(dataset, split="train", origin="gtsrb")
    X_real = np.repeat(X_real, config.real_repeat, axis=0)
    y_real = np.repeat(y_real, config.real_repeat, axis=0)
    net = build_network(config.width)
    steps = config.epochs * math.ceil((config.sim_per_epoch + len(y_real)) / config.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)
    rng = np.random.default_rng(config.seed)
    for epoch in range(config.epochs):
        pick = rng.choice(len(y_sim), size=min(config.sim_per_epoch, len(y_sim)), replace=False)
        X = torch.from_numpy(np.concatenate([X_sim[pick], X_real]))
        y = torch.from_numpy(np.concatenate([y_sim[pick], y_real]))
        order = torch.randperm(len(y), generator=generator)
        net.train()
        total, started = 0.0, time.perf_counter()
        for batch in order.split(config.batch_size):
            loss = F.cross_entropy(
                net.logits(augment(X[batch], generator)),
                y[batch],
                label_smoothing=config.label_smoothing,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        log(f"epoch {epoch + 1}/{config.epochs}: loss {total / len(y):.3f} "
            f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    return net.eval()


def predict(net, images: np.ndarray) -> np.ndarray:
    """Class ids the network gives uint8 NHWC ``images``."""
    import torch

    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(images).copy())).argmax(1).numpy()


def export_onnx(net, path: str | os.PathLike[str]) -> Path:
    """Write the network as ONNX (``images`` uint8 [N,32,32,3] -> ``scores`` [N,43])."""
    import torch

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter: no onnxscript needed
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net, (torch.zeros(1, 32, 32, 3, dtype=torch.uint8),), str(out), dynamo=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=17,
            dynamic_axes={INPUT_NAME: {0: "n"}, OUTPUT_NAME: {0: "n"}},
        )  # fmt: skip
    return out


def held_out_accuracy(net, dataset: str | os.PathLike[str]) -> dict[str, float]:
    """Accuracy on the dataset's ``test`` split, per origin (``sim``, ``gtsrb``)."""
    result = {}
    for origin in ("sim", "gtsrb"):
        X, y = read_image_dataset(dataset, split="test", origin=origin)
        if len(y):
            result[f"acc_{origin}_test"] = round(float((predict(net, X) == y).mean()), 4)
            result[f"n_{origin}_test"] = len(y)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", help="signs.parquet from pipelines.sign_dataset")
    parser.add_argument("out_dir", help="where model.onnx goes")
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    config = TrainConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    started = time.perf_counter()
    net = train(args.dataset, config)
    path = export_onnx(net, Path(args.out_dir) / "model.onnx")
    summary = {**asdict(config), **held_out_accuracy(net, args.dataset),
               "train_s": round(time.perf_counter() - started, 1), "model": str(path),
               "bytes": path.stat().st_size}  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
