"""The numpy backend: a small MLP over 32x32x3 image crops, trainable and exportable to ONNX.

Needs nothing beyond numpy (training) and ``onnx`` (export). Pixels go in as
they come (uint8, N x 32 x 32 x 3, the channel order of the training data: BGR
for the sign dataset); the model scales them to [-0.5, 0.5] itself, so the
exported ONNX graph takes the same raw crops. The export has the signature
``operators.signs.SignRecognizer`` asks of its classifier (``images`` uint8
[N, 32, 32, 3] -> ``scores`` float32 [N, C]), so a federated round's model can be
rolled out to it.

>>> rng = np.random.default_rng(0)
>>> X = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
>>> y = (X[:, 0, 0, 0] > 127).astype(np.int64)  # a class a pixel decides
>>> t = MLPTrainer((X, y), (X, y), num_classes=2, hidden=(16,), seed=0)
>>> r = t.fit(t.get_weights(), {"epochs": 30, "lr": 0.1, "batch_size": 8})
>>> r.num_samples, t.evaluate(r.weights, {}).accuracy > 0.9
(40, True)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models._errors import FederatedError
from models.federated.trainer import EvalResult, FitResult, Weights

IMAGE_SHAPE = (32, 32, 3)
INPUT_NAME = "images"
OUTPUT_NAME = "scores"


def init_weights(num_inputs: int, hidden: Sequence[int], num_classes: int, *, seed: int) -> Weights:
    """He-initialised ``[W1, b1, W2, b2, ...]`` (float32) for the layer sizes given."""
    rng = np.random.default_rng(seed)
    sizes = [num_inputs, *hidden, num_classes]
    weights: Weights = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        weights.append(
            (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2 / fan_in)).astype(np.float32)
        )
        weights.append(np.zeros(fan_out, np.float32))
    return weights


def features(images: np.ndarray) -> np.ndarray:
    """Raw pixels (N x 32 x 32 x 3, 0-255) as float32 rows in [-0.5, 0.5]."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
        raise FederatedError(
            f"images have shape {x.shape}; the MLP takes N x 32 x 32 x 3 crops (resize them "
            "to 32x32 RGB first)"
        )
    return x.reshape(len(x), -1).astype(np.float32) / 255.0 - 0.5


def forward(weights: Weights, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Class probabilities of feature rows ``x`` and each layer's input (for backprop)."""
    inputs = []
    h = x
    n_layers = len(weights) // 2
    for i in range(n_layers):
        inputs.append(h)
        h = h @ weights[2 * i] + weights[2 * i + 1]
        if i < n_layers - 1:
            h = np.maximum(h, 0)
    h = h - h.max(axis=1, keepdims=True)
    probs = np.exp(h)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs, inputs


def loss_and_grads(weights: Weights, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
    """Mean cross-entropy of ``x`` against labels ``y`` and its gradient per layer."""
    probs, inputs = forward(weights, x)
    n = len(x)
    loss = float(-np.log(probs[np.arange(n), y] + 1e-12).mean())
    delta = probs
    delta[np.arange(n), y] -= 1
    delta /= n
    grads: Weights = [np.empty(0)] * len(weights)
    for i in reversed(range(len(weights) // 2)):
        grads[2 * i] = inputs[i].T @ delta
        grads[2 * i + 1] = delta.sum(axis=0)
        if i > 0:
            delta = (delta @ weights[2 * i].T) * (inputs[i] > 0)
    return loss, grads


class MLPTrainer:
    """A ``Trainer`` with a numpy MLP; ``train`` / ``test`` are ``(images, labels)`` or None.

    ``fit`` runs minibatch SGD; with ``config["proximal_mu"] > 0`` it adds FedProx's
    proximal term ``mu/2 * ||w - w_global||^2`` to the local loss.
    """

    def __init__(
        self,
        train: tuple[np.ndarray, np.ndarray] | None = None,
        test: tuple[np.ndarray, np.ndarray] | None = None,
        *,
        num_classes: int,
        hidden: Sequence[int] = (128,),
        seed: int = 0,
    ) -> None:
        self.num_classes = num_classes
        self.hidden = tuple(hidden)
        self._weights = init_weights(int(np.prod(IMAGE_SHAPE)), self.hidden, num_classes, seed=seed)
        self._train = self._prepare(train, "train")
        self._test = self._prepare(test, "test")

    def _prepare(self, data, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        if data is None:
            return None
        images, labels = data
        y = np.asarray(labels, dtype=np.int64)
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            raise FederatedError(
                f"{split} labels run from {y.min()} to {y.max()}; this model has "
                f"{self.num_classes} classes (0..{self.num_classes - 1}): pass num_classes"
            )
        return features(images), y

    def get_weights(self) -> Weights:
        return [w.copy() for w in self._weights]

    def set_weights(self, weights: Weights) -> None:
        self._weights = [np.array(w, dtype=np.float32) for w in weights]

    def fit(self, weights: Weights, config: Mapping[str, Any]) -> FitResult:
        if self._train is None or not len(self._train[1]):
            raise FederatedError("this trainer has no training data; give it a train split")
        x, y = self._train
        epochs = int(config.get("epochs", 1))
        lr = float(config.get("lr", 0.05))
        batch = int(config.get("batch_size", 32))
        mu = float(config.get("proximal_mu", 0.0))
        rng = np.random.default_rng(int(config.get("seed", 0)))
        start = [np.array(w, dtype=np.float32) for w in weights]
        w = [a.copy() for a in start]
        losses = []
        for _ in range(epochs):
            order = rng.permutation(len(y))
            for lo in range(0, len(order), batch):
                idx = order[lo : lo + batch]
                loss, grads = loss_and_grads(w, x[idx], y[idx])
                losses.append(loss)
                for k in range(len(w)):
                    g = grads[k] + mu * (w[k] - start[k]) if mu else grads[k]
                    w[k] -= lr * g.astype(np.float32)
        self._weights = w
        return FitResult(self.get_weights(), len(y), {"train_loss": float(np.mean(losses))})

    def evaluate(self, weights: Weights, config: Mapping[str, Any]) -> EvalResult:
        if self._test is None or not len(self._test[1]):
            return EvalResult(loss=float("nan"), accuracy=float("nan"), num_samples=0)
        return score(weights, *self._test)

    def to_onnx(self, weights: Weights | None = None) -> bytes:
        """The model with ``weights`` (default: its own) as ONNX bytes; see ``export_onnx``."""
        return export_onnx(self.get_weights() if weights is None else weights)


def score(weights: Weights, x: np.ndarray, y: np.ndarray) -> EvalResult:
    """Loss and accuracy of ``weights`` on feature rows ``x`` (from ``features``) and labels."""
    probs, _ = forward(weights, x)
    loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
    return EvalResult(loss, float((probs.argmax(axis=1) == y).mean()), len(y))


def export_onnx(weights: Weights) -> bytes:
    """ONNX bytes: input ``images`` uint8 [N, 32, 32, 3], output ``scores`` (softmax) [N, C]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_layers = len(weights) // 2
    inits = [
        numpy_helper.from_array(np.array([-1, int(np.prod(IMAGE_SHAPE))], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(1 / 255.0, np.float32), "scale"),
        numpy_helper.from_array(np.array(0.5, np.float32), "shift"),
    ]
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["pixels", "flat_shape"], ["flat"]),
        helper.make_node("Mul", ["flat", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "shift"], ["h0"]),
    ]
    for i in range(n_layers):
        inits += [
            numpy_helper.from_array(np.asarray(weights[2 * i], np.float32), f"W{i}"),
            numpy_helper.from_array(np.asarray(weights[2 * i + 1], np.float32), f"b{i}"),
        ]
        out = f"z{i}" if i < n_layers - 1 else "logits"
        nodes.append(helper.make_node("Gemm", [f"h{i}", f"W{i}", f"b{i}"], [out]))
        if i < n_layers - 1:
            nodes.append(helper.make_node("Relu", [out], [f"h{i + 1}"]))
    nodes.append(helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1))
    num_classes = int(np.asarray(weights[-1]).shape[0])
    graph = helper.make_graph(
        nodes,
        "edgeray-mlp",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", *IMAGE_SHAPE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", num_classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
