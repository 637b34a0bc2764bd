"""Train the 43-class GTSRB sign classifier on a sign crop dataset and export it to ONNX.

The dataset is the Parquet file ``pipelines.sign_dataset`` writes (simulator crops and
the real GTSRB training images; ``models.datasets.read_image_dataset`` reads it). The
network is a small CNN (about 114 k parameters at width 16) whose exported graph takes
what a camera gives, so callers need no preprocessing:

- input ``images``: uint8 ``[N, 32, 32, 3]``, BGR, as OpenCV crops it;
- output ``scores``: float32 ``[N, 43]``, softmax class probabilities.

Inside, each image is standardised by its own mean and spread (so exposure matters
little), then three conv blocks and a linear layer; ``members`` > 1 exports the mean of
several such networks (one seed each) as one graph, and ``views`` has that graph score a
few zoomed copies of each crop and average them (test-time views,
``models.training.sign_views``). Training uses the few real images as templates
(``models.training.sign_synthesis``): each is mirrored where its class allows, repeated
``real_repeat`` times per epoch and every repeat is a new view of it (warped, put on
another background, re-lit, degraded), so the real signs weigh more than the simulator
crops that each epoch also draws.

Run (needs the ``[train]`` extra, PyTorch CPU)::

    python -m pipelines.sign_dataset /tmp/signs                       # the dataset
    python -m models.training.signs /tmp/signs/signs.parquet models/artifacts/gtsrb-signs

It prints the accuracy of the exported ``model.onnx`` on the dataset's held-out splits as
a last-line JSON object. PyTorch is imported inside the functions that need it: it is an
optional extra, and ``models`` must import without it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from models.datasets import read_image_dataset
from models.inference import open_session
from models.training.sign_synthesis import (
    camera_effects,
    mirror_templates,
    plate_masks,
    real_views,
)
from models.training.sign_views import add_views

NUM_CLASSES = 43
INPUT_NAME, OUTPUT_NAME = "images", "scores"


@dataclass(frozen=True)
class TrainConfig:
    """How to train: epochs, batch size, peak learning rate, seed, label smoothing, network
    width, how many simulator crops each epoch draws and how often each real image repeats
    in it, how many networks (seeds ``seed``, ``seed + 1``, ...) the exported model averages,
    whether it averages test-time views of each crop too (``sign_views.VIEWS``), and
    whether to hold one real training image per class out for validation
    (``held_out_real``) instead of reporting the real test split."""

    epochs: int = 16
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    label_smoothing: float = 0.05
    width: int = 16
    real_repeat: int = 60
    sim_per_epoch: int = 4000
    members: int = 3
    views: bool = True
    validate: bool = False


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


def ensemble(nets):
    """One module whose scores are the mean of the softmax scores of ``nets``: exported as
    one ONNX graph, so the averaging costs callers nothing but the members' arithmetic."""
    import torch
    from torch import nn

    class Ensemble(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(nets)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.stack([member(images) for member in self.members]).mean(dim=0)

    return Ensemble().eval()


def held_out_real(class_ids: np.ndarray) -> np.ndarray:
    """Boolean mask of the real training images kept for validation: the last of each
    class (in dataset order), so recipes are compared without the real test images."""
    last = {int(c): i for i, c in enumerate(class_ids)}
    return np.isin(np.arange(len(class_ids)), list(last.values()))


def train(dataset: str | os.PathLike[str], config: TrainConfig = TrainConfig(), *, log=print):
    """Train one network (seed ``config.seed``) on the dataset's ``train`` split; returns it
    in eval mode.

    With ``config.validate`` one real training image per class (``held_out_real``) is
    left out, and each epoch's log line gives the accuracy on those images.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    X_sim, y_sim = read_image_dataset(dataset, split="train", origin="sim")
    X_real, y_real = read_image_dataset(dataset, split="train", origin="gtsrb")
    X_val, y_val = X_real[:0], y_real[:0]
    if config.validate:
        val = held_out_real(y_real)
        X_val, y_val, X_real, y_real = X_real[val], y_real[val], X_real[~val], y_real[~val]
    X_mirror, y_mirror = mirror_templates(X_real, y_real)
    X_real, y_real = np.concatenate([X_real, X_mirror]), np.concatenate([y_real, y_mirror])
    X_real = np.repeat(X_real, config.real_repeat, axis=0)
    y_real = np.repeat(y_real, config.real_repeat, axis=0)
    X_all = torch.from_numpy(np.concatenate([X_sim, X_real]))
    y_all = torch.from_numpy(np.concatenate([y_sim, y_real]))
    # a real view cuts the sign out along its outline; a simulator crop moves as a whole
    sim_masks = np.ones((len(y_sim), *X_sim.shape[1:3]), np.float32)
    masks = torch.from_numpy(np.concatenate([sim_masks, plate_masks(y_real)]))
    net = build_network(config.width)
    steps = config.epochs * math.ceil((config.sim_per_epoch + len(y_real)) / config.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)
    rng = np.random.default_rng(config.seed)
    for epoch in range(config.epochs):
        pick = rng.choice(len(y_sim), size=min(config.sim_per_epoch, len(y_sim)), replace=False)
        epoch_rows = torch.from_numpy(np.concatenate([pick, np.arange(len(y_sim), len(y_all))]))
        order = epoch_rows[torch.randperm(len(epoch_rows), generator=generator)]
        net.train()
        total, started = 0.0, time.perf_counter()
        for batch in order.split(config.batch_size):
            images = camera_effects(real_views(X_all[batch], masks[batch], generator), generator)
            loss = F.cross_entropy(
                net.logits(images),
                y_all[batch],
                label_smoothing=config.label_smoothing,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        net.eval()
        val = f", validation {(predict(net, X_val) == y_val).mean():.3f}" if len(y_val) else ""
        log(f"epoch {epoch + 1}/{config.epochs}: loss {total / len(order):.3f}{val} "
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


def held_out_accuracy(
    model: str | os.PathLike[str], dataset: str | os.PathLike[str], *, validate: bool = False
) -> dict[str, float]:
    """Accuracy of the ONNX classifier ``model`` on the dataset's ``test`` split per origin
    (``sim``, ``gtsrb``); with ``validate``, on the real validation images
    (``held_out_real``) instead of the real test split, which recipe choices must not
    look at."""
    session = open_session(model, intra_op_threads=min(2, os.cpu_count() or 1),
                           providers=["CPUExecutionProvider"])  # fmt: skip
    sets = {"sim_test": read_image_dataset(dataset, split="test", origin="sim")}
    if validate:
        X, y = read_image_dataset(dataset, split="train", origin="gtsrb")
        val = held_out_real(y)
        sets["gtsrb_val"] = X[val], y[val]
    else:
        sets["gtsrb_test"] = read_image_dataset(dataset, split="test", origin="gtsrb")
    result = {}
    for name, (X, y) in sets.items():
        if len(y):
            scores = session.run([OUTPUT_NAME], {INPUT_NAME: X})[0]
            result[f"acc_{name}"] = round(float((scores.argmax(1) == y).mean()), 4)
            result[f"n_{name}"] = len(y)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", help="signs.parquet from pipelines.sign_dataset")
    parser.add_argument("out_dir", help="where model.onnx goes")
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    args = parser.parse_args(argv)
    config = TrainConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    started = time.perf_counter()
    seeds = range(config.seed, config.seed + config.members)
    nets = [train(args.dataset, replace(config, seed=seed)) for seed in seeds]
    net = nets[0] if len(nets) == 1 else ensemble(nets)
    path = export_onnx(net, Path(args.out_dir) / "model.onnx")
    if config.views:
        add_views(path)
    accuracy = held_out_accuracy(path, args.dataset, validate=config.validate)
    summary = {**asdict(config), **accuracy,
               "train_s": round(time.perf_counter() - started, 1), "model": str(path),
               "bytes": path.stat().st_size}  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
