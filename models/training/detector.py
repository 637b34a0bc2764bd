"""Train the project's own object detector for the simulator's world and export it to ONNX.

Reads the Parquet dataset that ``pipelines.detector_dataset`` writes (JPEG frames already
scaled to the letterbox size, boxes, classes, visibility; this module never imports the
simulator) and trains a small single-stage, anchor-free detector in the style of YOLOX:

- backbone of strided Conv-BN-SiLU stages with residual blocks, a top-down feature pyramid,
  and one head per level (strides 8, 16, 32) predicting ``[dx, dy, log w, log h, obj,
  cls...]`` per grid cell;
- assignment: a ground-truth box belongs to one level by its longer side (< 64 px: stride 8,
  < 128 px: 16, else 32) and to the cells of that level whose centres lie within
  ``CENTRE_RADIUS`` cells of the box centre; a cell claimed by two boxes takes the smaller.
  Objects the evaluation ignores (too small, too hidden) are neither positives nor
  negatives;
- losses: objectness BCE on every cell, GIoU and class BCE on positives (YOLOX weights);
- augmentation on the device: horizontal flip, scale jitter, brightness / contrast / noise
  wider than the training scenarios' lighting (held-out scenarios are darker and noisier).

The exported ONNX graph takes ``images`` float32 ``[1, 3, S, S]`` (BGR 0-255, letterboxed
top-left with 114, exactly YOLOX's input; scaling to 0-1 happens inside the model) and
returns ``output`` float32 ``[1, N, 5 + C]`` in YOLOX's layout: rows of strides 8, 16, 32,
row-major; ``cx, cy = (out[0:2] + grid) * stride``, ``w, h = exp(out[2:4]) * stride``,
obj and cls sigmoid-ed. So ``operators.detection.ObjectDetector`` runs it with
``input_size=S, num_classes=C, classes=None``.

Run (the ``[train]`` extra; CPU or CUDA)::

    python -m models.training.detector DATA/train.parquet OUT --minutes 5 --device cuda
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pyarrow.parquet as pq

from models._errors import DatasetError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Output strides, as YOLOX.
STRIDES = (8, 16, 32)
#: Letterbox padding value, as YOLOX.
PAD_VALUE = 114.0
#: Longest box side (input pixels) below which a box goes to stride 8, then 16; else 32.
LEVEL_LIMITS = (64.0, 128.0)
#: A cell is positive for a box when its centre lies within this many cells of the box's.
CENTRE_RADIUS = 1.5
#: Training positives: at least this tall (input pixels), and visible enough unless a sign.
MIN_TRAIN_HEIGHT = 6.0
MIN_TRAIN_VISIBLE = 0.4


# -- data -----------------------------------------------------------------------------------
class DetectionData:
    """A detection dataset in memory: images ``uint8 [N, H, W, 3]`` (BGR) and padded targets.

    ``targets`` is float32 ``[N, M, 7]``: ``class, x1, y1, x2, y2, hidden, valid`` where
    ``hidden`` marks a non-sign object under ``MIN_TRAIN_VISIBLE`` visible and ``valid``
    marks a real row (rows are padded to the frame with the most objects).
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, class_names: Sequence[str]):
        self.images, self.targets, self.class_names = images, targets, tuple(class_names)

    @classmethod
    def read(cls, path: str | os.PathLike[str], *, sign_class: int = 2) -> DetectionData:
        """Load a ``pipelines.detector_dataset`` Parquet file (all frames must share a size)."""
        if not os.path.exists(path):
            raise DatasetError(f"detection dataset {str(path)!r} not found; write one with "
                               "python -m pipelines.detector_dataset OUT")  # fmt: skip
        table = pq.read_table(str(path))
        needed = {"image", "boxes", "classes", "visible", "width", "height"}
        missing = needed - set(table.column_names)
        if missing:
            raise DatasetError(f"detection dataset {str(path)!r} lacks column(s) "
                               f"{sorted(missing)}; it has {table.column_names}")  # fmt: skip
        sizes = set(zip(table["height"].to_pylist(), table["width"].to_pylist(), strict=True))
        if len(sizes) != 1:
            raise DatasetError(f"detection dataset {str(path)!r} mixes image sizes {sizes}")
        jpegs = table["image"].to_pylist()
        images = np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
                           for b in jpegs])  # fmt: skip
        rows = zip(table["boxes"].to_pylist(), table["classes"].to_pylist(),
                   table["visible"].to_pylist(), strict=True)  # fmt: skip
        rows = list(rows)
        most = max(1, max(len(c) for _, c, _ in rows))
        targets = np.zeros((len(rows), most, 7), np.float32)
        for n, (boxes, classes, visible) in enumerate(rows):
            k = len(classes)
            if k:
                classes, visible = np.asarray(classes), np.asarray(visible)
                targets[n, :k, 0] = classes
                targets[n, :k, 1:5] = np.asarray(boxes, np.float32).reshape(-1, 4)
                targets[n, :k, 5] = (visible < MIN_TRAIN_VISIBLE) & (classes != sign_class)
                targets[n, :k, 6] = 1.0
        meta = table.schema.metadata or {}
        names = json.loads(meta.get(b"class_names", b'["vehicle", "pedestrian", "sign"]'))
        return cls(images, targets, names)


# -- model ----------------------------------------------------------------------------------
@functools.cache
def _network() -> type:
    """The network's classes, defined on first use (importing this module needs no PyTorch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def _conv(c_in: int, c_out: int, k: int = 3, s: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False),
                             nn.BatchNorm2d(c_out), nn.SiLU(inplace=True))  # fmt: skip

    class _Residual(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.body = nn.Sequential(_conv(c, c, 1), _conv(c, c, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x)

    class _Head(nn.Module):
        """One level's predictions: ``[B, H*W, 5 + C]`` raw (logits for obj and cls)."""

        def __init__(self, c: int, num_classes: int) -> None:
            super().__init__()
            self.stem = _conv(c, c, 1)
            self.reg = nn.Sequential(_conv(c, c), nn.Conv2d(c, 5, 1))
            self.cls = nn.Sequential(_conv(c, c), nn.Conv2d(c, num_classes, 1))
            prior = -math.log((1 - 0.01) / 0.01)
            nn.init.constant_(self.reg[-1].bias[4], prior)
            nn.init.constant_(self.cls[-1].bias, prior)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            out = torch.cat([self.reg(x), self.cls(x)], dim=1)
            return out.flatten(2).transpose(1, 2)

    class TinyDetector(nn.Module):
        """A small YOLOX-layout detector (about 0.5 M parameters).

        ``forward(images)`` takes BGR 0-255 float ``[B, 3, S, S]`` and returns ``[B, N, 5 + C]``:
        raw logits in training, obj / cls sigmoid-ed when ``export`` is set (the ONNX layout).
        """

        def __init__(self, num_classes: int, widths: Sequence[int] = (16, 32, 48, 64, 96)) -> None:
            super().__init__()
            w0, w1, w2, w3, w4 = widths
            neck = w2
            self.num_classes = num_classes
            self.export = False
            self.stem = nn.Sequential(_conv(3, w0, 3, 2), _conv(w0, w1, 3, 2), _Residual(w1))
            self.dark3 = nn.Sequential(_conv(w1, w2, 3, 2), _Residual(w2), _Residual(w2))
            self.dark4 = nn.Sequential(_conv(w2, w3, 3, 2), _Residual(w3), _Residual(w3))
            self.dark5 = nn.Sequential(_conv(w3, w4, 3, 2), _Residual(w4))
            self.lat5, self.lat4, self.lat3 = (
                _conv(w4, neck, 1),
                _conv(w3, neck, 1),
                _conv(w2, neck, 1),
            )
            self.smooth4, self.smooth3 = _conv(neck, neck), _conv(neck, neck)
            self.heads = nn.ModuleList(_Head(neck, num_classes) for _ in STRIDES)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = self.stem(images / 255.0)
            c3 = self.dark3(x)
            c4 = self.dark4(c3)
            c5 = self.dark5(c4)
            p5 = self.lat5(c5)
            p4 = self.smooth4(self.lat4(c4) + F.interpolate(p5, scale_factor=2.0, mode="nearest"))
            p3 = self.smooth3(self.lat3(c3) + F.interpolate(p4, scale_factor=2.0, mode="nearest"))
            out = torch.cat([head(p) for head, p in zip(self.heads, (p3, p4, p5), strict=True)], 1)
            if self.export:
                out = torch.cat([out[..., :4], out[..., 4:].sigmoid()], dim=-1)
            return out

    return TinyDetector


def tiny_detector(num_classes: int) -> nn.Module:
    """A new ``TinyDetector`` (see ``_network``) for ``num_classes`` classes."""
    return _network()(num_classes)


# -- targets and losses ---------------------------------------------------------------------
def grid(size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(cells [N, 2] (x, y), strides [N])`` of a ``size`` input, YOLOX's row order."""
    import torch

    cells, strides = [], []
    for s in STRIDES:
        n = size // s
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        cells.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], 1))
        strides.append(torch.full((n * n,), float(s)))
    return torch.cat(cells).float().to(device), torch.cat(strides).to(device)


def decode(raw: torch.Tensor, cells: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """xyxy boxes ``[B, N, 4]`` of raw predictions (the YOLOX grid decode)."""
    import torch

    centre = (raw[..., :2] + cells) * strides[:, None]
    half = torch.exp(raw[..., 2:4].clamp(max=8.0)) * strides[:, None] / 2
    return torch.cat([centre - half, centre + half], -1)


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of matching rows of two ``[K, 4]`` xyxy box tensors."""
    import torch

    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(1), (b[:, 2:] - b[:, :2]).prod(1)
    union = area_a + area_b - inter + 1e-7
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(1)
    return inter / union - (hull - union) / (hull + 1e-7)


def assign(
    targets: torch.Tensor, cells: torch.Tensor, strides: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(matched [B, N] box index or -1, ignored [B, N] bool, positive_box [B, M] bool)``.

    ``targets`` ``[B, M, 7]`` as ``DetectionData.targets`` (after augmentation).
    """
    import torch

    boxes, valid = targets[..., 1:5], targets[..., 6] > 0
    wh = boxes[..., 2:] - boxes[..., :2]
    trainable = valid & (wh[..., 1] >= MIN_TRAIN_HEIGHT) & (targets[..., 5] == 0)
    longest = wh.max(-1).values
    level = torch.bucketize(longest, torch.tensor(LEVEL_LIMITS, device=boxes.device))
    level_stride = torch.tensor(STRIDES, device=boxes.device, dtype=torch.float32)[level]
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # [B, M, 2]
    point = (cells + 0.5) * strides[:, None]  # [N, 2]
    near = (
        (point[None, :, None] - centre[:, None]).abs()
        <= CENTRE_RADIUS * strides[None, :, None, None]
    ).all(-1)  # fmt: skip  [B, N, M]
    same_level = strides[None, :, None] == level_stride[:, None]
    candidate = near & same_level & trainable[:, None]
    area = wh.prod(-1)[:, None].expand_as(candidate)
    area = torch.where(candidate, area, torch.full_like(area, float("inf")))
    best = area.argmin(-1)
    matched = torch.where(candidate.any(-1), best, torch.full_like(best, -1))
    inside = ((point[None, :, None] >= boxes[:, None, :, :2])
              & (point[None, :, None] <= boxes[:, None, :, 2:])).all(-1)  # fmt: skip
    ignored = ((inside | near) & (valid & ~trainable)[:, None]).any(-1) & (matched < 0)
    return matched, ignored, trainable


def loss(
    raw: torch.Tensor, targets: torch.Tensor, cells: torch.Tensor, strides: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """YOLOX-style loss of raw predictions ``[B, N, 5 + C]`` against ``targets``."""
    import torch.nn.functional as F

    raw = raw.float()
    matched, ignored, _ = assign(targets, cells, strides)
    positive = matched >= 0
    num_pos = max(int(positive.sum()), 1)
    obj_target = positive.float()
    obj = F.binary_cross_entropy_with_logits(raw[..., 4], obj_target, reduction="none")
    obj_loss = (obj * (~ignored).float()).sum() / num_pos
    b, n = positive.nonzero(as_tuple=True)
    gt = targets[b, matched[b, n]]
    pred_boxes = decode(raw[b, n][None], cells[n], strides[n])[0]
    box_loss = (1.0 - giou(pred_boxes, gt[:, 1:5])).sum() / num_pos
    cls_target = F.one_hot(gt[:, 0].long(), raw.shape[-1] - 5).float()
    cls_loss = F.binary_cross_entropy_with_logits(raw[b, n, 5:], cls_target,
                                                  reduction="sum") / num_pos  # fmt: skip
    total = obj_loss + 5.0 * box_loss + cls_loss
    parts = {"obj": obj_loss.item(), "box": box_loss.item(), "cls": cls_loss.item(),
             "positives": float(num_pos)}  # fmt: skip
    return total, parts


# -- augmentation ---------------------------------------------------------------------------
def augment_batch(
    images: torch.Tensor, targets: torch.Tensor, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Letterboxed, augmented float batch ``[B, 3, size, size]`` and its moved targets.

    ``images`` uint8 ``[B, H, W, 3]`` (already at letterbox scale). One scale in
    [0.75, 1.3] per batch (crop at a random offset when larger), per-image flip,
    contrast, brightness and Gaussian noise.
    """
    import torch
    import torch.nn.functional as F

    dev = images.device

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.rand(shape or (1,), generator=generator, device=dev) * (hi - lo) + lo

    x = images.permute(0, 3, 1, 2).float()
    t = targets.clone()
    bsz, _, h, w = x.shape
    flip = u(0, 1, bsz) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    x1, x2 = t[..., 1].clone(), t[..., 3].clone()
    t[..., 1] = torch.where(flip[:, None], w - x2, x1)
    t[..., 3] = torch.where(flip[:, None], w - x1, x2)
    scale = float(u(0.75, 1.3))
    nh, nw = round(h * scale), round(w * scale)
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    t[..., 1:5] *= scale
    oy = int(u(0, max(nh - size, 0) + 1)) if nh > size else 0
    ox = int(u(0, max(nw - size, 0) + 1)) if nw > size else 0
    x = x[:, :, oy : oy + size, ox : ox + size]
    t[..., [1, 3]] -= ox
    t[..., [2, 4]] -= oy
    ch, cw = x.shape[-2:]
    before = (t[..., 3] - t[..., 1]) * (t[..., 4] - t[..., 2])
    t[..., [1, 3]] = t[..., [1, 3]].clamp(0, cw)
    t[..., [2, 4]] = t[..., [2, 4]].clamp(0, ch)
    after = (t[..., 3] - t[..., 1]) * (t[..., 4] - t[..., 2])
    t[..., 6] *= (after > 0.4 * before.clamp(min=1e-6)).float()
    contrast = u(0.6, 1.25, bsz)[:, None, None, None]
    brightness = u(-55, 35, bsz)[:, None, None, None]
    sigma = u(0, 7, bsz)[:, None, None, None]
    noise = torch.randn(x.shape, generator=generator, device=dev)
    x = (x * contrast + brightness + noise * sigma).clamp(0, 255).round()
    canvas = torch.full((bsz, 3, size, size), PAD_VALUE, device=dev)
    canvas[:, :, :ch, :cw] = x
    return canvas, t


# -- training and export --------------------------------------------------------------------
def train(
    data: DetectionData,
    *,
    size: int = 416,
    minutes: float = 5.0,
    max_epochs: int = 1000,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    device: str = "cpu",
    log_every: int = 50,
) -> tuple[nn.Module, dict]:
    """Train a ``TinyDetector`` for ``minutes`` of wall time (cosine LR over that time) or
    ``max_epochs``, whichever ends first; returns the EMA model and a record of the run."""
    import torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    model = tiny_detector(len(data.class_names)).to(device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    images = torch.from_numpy(data.images).to(device)
    targets = torch.from_numpy(data.targets).to(device)
    cells, strides = grid(size, device)
    budget, start = minutes * 60.0, time.monotonic()
    step, epoch, parts = 0, 0, {}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    while epoch < max_epochs and time.monotonic() - start < budget:
        order = torch.randperm(len(images), generator=generator, device=device)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            done = (time.monotonic() - start) / budget
            if done >= 1.0:
                break
            for group in opt.param_groups:
                group["lr"] = lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * done)))
                group["lr"] *= min(1.0, (step + 1) / 300)  # warm-up
            idx = order[i : i + batch_size]
            x, t = augment_batch(images[idx], targets[idx], size, generator)
            with autocast:
                raw = model(x)
            total, parts = loss(raw, t, cells, strides)
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            ema.update_parameters(model)
            step += 1
            if step % log_every == 0:
                print(f"epoch {epoch} step {step} {time.monotonic() - start:.0f}s "
                      f"loss {float(total):.3f} {parts}", flush=True)  # fmt: skip
        epoch += 1
    record = {"epochs": epoch, "steps": step, "seconds": round(time.monotonic() - start, 1),
              "batch_size": batch_size, "lr": lr, "seed": seed, "input_size": size,
              "frames": len(images), "class_names": list(data.class_names),
              "device": device, "last_loss": parts}  # fmt: skip
    return ema.module, record


def export_onnx(model: nn.Module, path: str | os.PathLike[str], *, size: int = 416) -> Path:
    """Write ``model`` as ONNX (``images`` -> ``output``, YOLOX layout, opset 17)."""
    import torch

    model = model.cpu().eval()
    model.export = True
    try:
        dummy = torch.zeros(1, 3, size, size)
        torch.onnx.export(model, (dummy,), str(path), input_names=["images"],
                          output_names=["output"], opset_version=17, dynamo=False)  # fmt: skip
    finally:
        model.export = False
    return Path(path)


def save_checkpoint(model: nn.Module, record: dict, path: str | os.PathLike[str]) -> None:
    """The trained weights and the run's record (to export or evaluate later)."""
    import torch

    torch.save({"state_dict": model.state_dict(), "record": record}, str(path))


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, dict]:
    """A ``TinyDetector`` and its record from ``save_checkpoint``."""
    import torch

    saved = torch.load(str(path), map_location="cpu", weights_only=True)
    model = tiny_detector(len(saved["record"]["class_names"]))
    model.load_state_dict(saved["state_dict"])
    return model.eval(), saved["record"]


def main(argv: Sequence[str] | None = None) -> int:
    """Train on a dataset file, write ``OUT/detector.pt``, ``OUT/model.onnx``, ``OUT/run.json``."""
    import torch

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("data", help="train.parquet from python -m pipelines.detector_dataset")
    ap.add_argument("out", help="output folder")
    ap.add_argument("--minutes", type=float, default=5.0, help="wall-time budget of training")
    ap.add_argument("--max-epochs", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N frames (smoke)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = DetectionData.read(args.data)
    if args.limit:
        data = DetectionData(data.images[: args.limit], data.targets[: args.limit],
                             data.class_names)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, record = train(data, minutes=args.minutes, max_epochs=args.max_epochs,
                          batch_size=args.batch_size, seed=args.seed,
                          device=args.device)  # fmt: skip
    record["machine"] = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    record["torch"] = str(torch.__version__)
    save_checkpoint(model, record, out / "detector.pt")
    (out / "run.json").write_text(json.dumps(record, indent=1))
    export_onnx(model, out / "model.onnx", size=record["input_size"])
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
