"""The PyTorch backend: a small CNN over 32x32x3 crops, exported with ``torch.onnx``.

Needs the optional ``[train]`` extra (``pip install torch==2.13.0``, the CPU
build); importing this module does not import torch, building a trainer does.
Same protocol and the same ONNX signature as the numpy MLP: input ``images``
uint8 [N, 32, 32, 3] raw pixels, output ``scores`` (softmax) [N, C].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models._errors import FederatedError
from models.federated.numpy_mlp import IMAGE_SHAPE, INPUT_NAME, OUTPUT_NAME
from models.federated.trainer import EvalResult, FitResult, Weights


def _torch():
    try:
        import torch
    except ImportError as err:
        raise FederatedError(
            "the PyTorch backend needs torch: install the [train] extra "
            "(`pip install torch==2.13.0`, the CPU build) or use the numpy backend (MLPTrainer)"
        ) from err
    return torch


def _build(num_classes: int):
    torch = _torch()
    nn = torch.nn

    class SignCNN(nn.Module):
        """conv 16 - pool - conv 32 - pool - linear; takes raw NHWC pixels like the MLP."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * 8 * 8, num_classes),
            )

        def forward(self, images):
            x = images.float().permute(0, 3, 1, 2) / 255.0 - 0.5
            return self.body(x)

    return SignCNN()


class TorchCNNTrainer:
    """A ``Trainer`` with a PyTorch CNN; ``train`` / ``test`` are ``(images, labels)`` or None."""

    def __init__(
        self,
        train: tuple[np.ndarray, np.ndarray] | None = None,
        test: tuple[np.ndarray, np.ndarray] | None = None,
        *,
        num_classes: int,
        seed: int = 0,
    ) -> None:
        torch = _torch()
        torch.manual_seed(seed)
        self.num_classes = num_classes
        self.model = _build(num_classes)
        self._train = self._tensors(train)
        self._test = self._tensors(test)

    def _tensors(self, data):
        if data is None:
            return None
        torch = _torch()
        images, labels = data
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
            raise FederatedError(f"images have shape {images.shape}; the CNN takes N x 32 x 32 x 3")
        return torch.as_tensor(images, dtype=torch.float32), torch.as_tensor(labels).long()

    def get_weights(self) -> Weights:
        return [v.detach().cpu().numpy().copy() for v in self.model.state_dict().values()]

    def set_weights(self, weights: Weights) -> None:
        torch = _torch()
        keys = list(self.model.state_dict().keys())
        self.model.load_state_dict(
            {k: torch.as_tensor(np.asarray(w)) for k, w in zip(keys, weights, strict=True)}
        )

    def fit(self, weights: Weights, config: Mapping[str, Any]) -> FitResult:
        torch = _torch()
        if self._train is None:
            raise FederatedError("this trainer has no training data; give it a train split")
        self.set_weights(weights)
        start = [p.detach().clone() for p in self.model.parameters()]
        mu = float(config.get("proximal_mu", 0.0))
        batch = int(config.get("batch_size", 32))
        generator = torch.Generator().manual_seed(int(config.get("seed", 0)))
        optimiser = torch.optim.SGD(self.model.parameters(), lr=float(config.get("lr", 0.05)))
        x, y = self._train
        losses = []
        self.model.train()
        for _ in range(int(config.get("epochs", 1))):
            order = torch.randperm(len(y), generator=generator)
            for lo in range(0, len(order), batch):
                idx = order[lo : lo + batch]
                optimiser.zero_grad()
                loss = torch.nn.functional.cross_entropy(self.model(x[idx]), y[idx])
                if mu:
                    params = zip(self.model.parameters(), start, strict=True)
                    prox = sum(((p - s) ** 2).sum() for p, s in params)
                    loss = loss + mu / 2 * prox
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
        return FitResult(self.get_weights(), len(y), {"train_loss": float(np.mean(losses))})

    def evaluate(self, weights: Weights, config: Mapping[str, Any]) -> EvalResult:
        torch = _torch()
        if self._test is None or not len(self._test[1]):
            return EvalResult(float("nan"), float("nan"), 0)
        self.set_weights(weights)
        self.model.eval()
        x, y = self._test
        with torch.no_grad():
            logits = self.model(x)
            loss = float(torch.nn.functional.cross_entropy(logits, y))
            accuracy = float((logits.argmax(dim=1) == y).float().mean())
        return EvalResult(loss, accuracy, len(y))

    def to_onnx(self, weights: Weights | None = None) -> bytes:
        """ONNX bytes exported with ``torch.onnx`` (softmax probabilities as ``scores``)."""
        import io

        torch = _torch()
        if weights is not None:
            self.set_weights(weights)
        wrapped = torch.nn.Sequential(self.model, torch.nn.Softmax(dim=1)).eval()
        buffer = io.BytesIO()
        torch.onnx.export(
            wrapped,
            (torch.zeros(1, *IMAGE_SHAPE, dtype=torch.uint8),),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
            dynamo=False,
        )
        return buffer.getvalue()
