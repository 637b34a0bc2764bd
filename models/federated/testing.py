"""Test helpers: a synthetic image classification set that trains in a second.

>>> X, y = class_patterns(num_classes=3, per_class=4, seed=0)
>>> X.shape, X.dtype, np.bincount(y).tolist()
((12, 32, 32, 3), dtype('uint8'), [4, 4, 4])
"""

from __future__ import annotations

import numpy as np

from models.federated.numpy_mlp import IMAGE_SHAPE


def class_patterns(
    *, num_classes: int, per_class: int, noise: float = 60.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images of one fixed random pattern per class plus Gaussian pixel noise (uint8), labels.

    The patterns come from a fixed generator, so sets drawn with different
    ``seed`` values (train, test, clients) share their classes.
    """
    patterns = np.random.default_rng(12345).uniform(40, 215, (num_classes, *IMAGE_SHAPE))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(num_classes), per_class)
    X = patterns[y] + rng.normal(0, noise, (len(y), *IMAGE_SHAPE))
    order = rng.permutation(len(y))
    return np.clip(X, 0, 255).astype(np.uint8)[order], y[order].astype(np.int64)
