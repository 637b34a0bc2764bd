"""Aggregation strategies: how a round's client results become the next global model.

A strategy is a small object chosen by name (``make_strategy("fedavg")``):

* ``fit_config(round)`` adds what clients must know to train (FedProx's ``proximal_mu``);
* ``aggregate(global_weights, results)`` returns the next global weights;
* ``state()`` / ``restore(state)`` carry server-side state (FedAdam's moments)
  through a checkpoint.

*Linear* strategies (FedAvg, FedProx, FedAdam, FedYogi, DPFedAvg) depend on the
clients only through a sum: each client's update is ``encoding.encode``-d into a
vector and a weight, and ``from_sum`` turns the sums into the next model. Only
they work with secure aggregation, which reveals nothing but that sum. The robust
ones (median, trimmed mean, Krum) need each update and refuse masking.

>>> import numpy as np
>>> g = [np.zeros(2, np.float32)]
>>> def result(values, n):
...     return FitResult([np.array(values, np.float32)], n)
>>> results = [result([1, 1], 1), result([4, 4], 2)]
>>> FedAvg().aggregate(g, results)[0].tolist()
[3.0, 3.0]
>>> Median().aggregate(g, [*results, result([90, -90], 5)])[0].tolist()
[4.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from models._errors import FederatedError, NotEnoughClients
from models.federated import kernels
from models.federated.privacy import clip
from models.federated.trainer import FitResult, Weights


class Strategy(Protocol):
    """What the coordinator asks of an aggregation strategy."""

    name: str

    def fit_config(self, server_round: int) -> dict[str, Any]: ...

    def aggregate(self, global_weights: Weights, results: Sequence[FitResult]) -> Weights: ...

    def state(self) -> dict[str, np.ndarray]: ...

    def restore(self, state: Mapping[str, np.ndarray]) -> None: ...


@dataclass(frozen=True)
class LinearEncoding:
    """How a client turns its update into a summable vector (also run inside secure aggregation).

    ``weighting``: ``"samples"`` (FedAvg: the update times the client's sample count)
    or ``"uniform"`` (weight 1). ``clip_norm``: clip the update's L2 norm first (DP).
    """

    weighting: str = "samples"
    clip_norm: float | None = None

    def encode(self, global_weights: Weights, result: FitResult) -> tuple[np.ndarray, float]:
        update = kernels.flatten(result.weights) - kernels.flatten(global_weights)
        if self.clip_norm is not None:
            update = clip(update, self.clip_norm)
        weight = float(result.num_samples) if self.weighting == "samples" else 1.0
        return update * weight, weight


class StrategyBase:
    """Defaults: no extra client config, no server state."""

    name = "base"
    linear = False

    def fit_config(self, server_round: int) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        return None


class LinearStrategy(StrategyBase):
    """Base of strategies that need only the sum of encoded updates (secure-aggregation ready)."""

    name = "linear"
    linear = True
    encoding = LinearEncoding()

    def aggregate(self, global_weights: Weights, results: Sequence[FitResult]) -> Weights:
        _require(results, 1, self.name)
        encoded = [self.encoding.encode(global_weights, r) for r in results]
        total = np.sum([v for v, _ in encoded], axis=0)
        return self.from_sum(global_weights, total, sum(w for _, w in encoded), len(results))

    def from_sum(
        self, global_weights: Weights, summed: np.ndarray, total_weight: float, count: int
    ) -> Weights:
        """The next global model from the sum of ``count`` encoded updates and their weights."""
        return self._step(global_weights, summed / total_weight)

    def _step(self, global_weights: Weights, mean_update: np.ndarray) -> Weights:
        return kernels.unflatten(kernels.flatten(global_weights) + mean_update, global_weights)


class FedAvg(LinearStrategy):
    """Sample-weighted average of the clients' models (McMahan et al., 2017)."""

    name = "fedavg"


class FedProx(FedAvg):
    """FedAvg whose clients add ``mu/2 * ||w - w_global||^2`` to their loss (Li et al., 2020)."""

    name = "fedprox"

    def __init__(self, *, proximal_mu: float = 0.01) -> None:
        if proximal_mu < 0:
            raise FederatedError(f"FedProx proximal_mu is {proximal_mu}; it must be >= 0")
        self.proximal_mu = proximal_mu

    def fit_config(self, server_round: int) -> dict[str, Any]:
        return {"proximal_mu": self.proximal_mu}


class FedAdam(LinearStrategy):
    """Adam on the server with the mean update as pseudo-gradient (Reddi et al., 2021)."""

    name = "fedadam"

    def __init__(
        self, *, server_lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        self.server_lr, self.beta1, self.beta2, self.tau = server_lr, beta1, beta2, tau
        self._m: np.ndarray | None = None
        self._v: np.ndarray | None = None

    def _second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1 - self.beta2) * delta**2

    def _step(self, global_weights: Weights, mean_update: np.ndarray) -> Weights:
        if self._m is None or self._v is None:
            self._m = np.zeros_like(mean_update)
            self._v = np.full_like(mean_update, self.tau**2)
        self._m = self.beta1 * self._m + (1 - self.beta1) * mean_update
        self._v = self._second_moment(self._v, mean_update)
        step = self.server_lr * self._m / (np.sqrt(self._v) + self.tau)
        return kernels.unflatten(kernels.flatten(global_weights) + step, global_weights)

    def state(self) -> dict[str, np.ndarray]:
        return {} if self._m is None else {"m": self._m, "v": self._v}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        self._m = np.asarray(state["m"]) if "m" in state else None
        self._v = np.asarray(state["v"]) if "v" in state else None


class FedYogi(FedAdam):
    """FedAdam with Yogi's additive second moment, which grows more slowly (Reddi et al., 2021)."""

    name = "fedyogi"

    def _second_moment(self, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
        d2 = delta**2
        return v - (1 - self.beta2) * d2 * np.sign(v - d2)


class DPFedAvg(LinearStrategy):
    """Client-level DP: clip each update to ``clip_norm``, add N(0, (z * clip_norm)^2) to the sum.

    Updates are averaged uniformly (a sample-weighted sum would let one client's
    count scale its influence past the clip). ``privacy.epsilon`` reports the cost.
    """

    name = "dpfedavg"

    def __init__(self, *, clip_norm: float, noise_multiplier: float, seed: int = 0) -> None:
        if clip_norm <= 0 or noise_multiplier < 0:
            raise FederatedError(
                f"DPFedAvg needs clip_norm > 0 and noise_multiplier >= 0; got {clip_norm}, "
                f"{noise_multiplier}"
            )
        self.clip_norm, self.noise_multiplier = clip_norm, noise_multiplier
        self.encoding = LinearEncoding(weighting="uniform", clip_norm=clip_norm)
        self._rng = np.random.default_rng(seed)

    def from_sum(
        self, global_weights: Weights, summed: np.ndarray, total_weight: float, count: int
    ) -> Weights:
        noise = self._rng.normal(0.0, self.noise_multiplier * self.clip_norm, summed.shape)
        return self._step(global_weights, (summed + noise) / count)


class Median(StrategyBase):
    """Coordinate-wise median of the clients' models: robust to a minority of bad clients."""

    name = "median"

    def aggregate(self, global_weights: Weights, results: Sequence[FitResult]) -> Weights:
        _require(results, 1, self.name)
        return kernels.coordinate_median([r.weights for r in results])


class TrimmedMean(StrategyBase):
    """Coordinate-wise mean without the ``trim`` fraction of extremes at each end."""

    name = "trimmed"

    def __init__(self, *, trim: float = 0.2) -> None:
        if not 0 <= trim < 0.5:
            raise FederatedError(f"trimmed mean trim is {trim}; it must be in [0, 0.5)")
        self.trim = trim

    def aggregate(self, global_weights: Weights, results: Sequence[FitResult]) -> Weights:
        _require(results, 1, self.name)
        return kernels.trimmed_mean([r.weights for r in results], self.trim)


class Krum(StrategyBase):
    """The one client model closest to its peers, tolerating ``byzantine`` bad clients."""

    name = "krum"

    def __init__(self, *, byzantine: int = 1) -> None:
        self.byzantine = byzantine

    def aggregate(self, global_weights: Weights, results: Sequence[FitResult]) -> Weights:
        _require(results, 2 * self.byzantine + 3, self.name)
        chosen = kernels.krum_select([r.weights for r in results], self.byzantine)
        return [w.copy() for w in results[chosen].weights]


STRATEGIES = {
    cls.name: cls
    for cls in (FedAvg, FedProx, FedAdam, FedYogi, DPFedAvg, Median, TrimmedMean, Krum)
}


def make_strategy(name: str, **options: Any) -> StrategyBase:
    """The strategy called ``name`` built with keyword ``options``; a clear error for others."""
    if name not in STRATEGIES:
        raise FederatedError(
            f"unknown aggregation strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}"
        )
    try:
        return STRATEGIES[name](**options)
    except TypeError as err:
        raise FederatedError(
            f"strategy {name!r} does not take these options {options}: {err}"
        ) from err


def _require(results: Sequence[FitResult], minimum: int, name: str) -> None:
    if len(results) < minimum:
        raise NotEnoughClients(
            f"strategy {name!r} got {len(results)} client results this round and needs at least "
            f"{minimum}; lower the round's minimum, sample more clients or lengthen its deadline"
        )
