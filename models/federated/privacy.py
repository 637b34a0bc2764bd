"""Client-level differential privacy: clip each update, add Gaussian noise to the sum, account.

The accountant is Google's ``dp_accounting`` (RDP): each round samples clients
with probability ``sample_rate`` (Poisson) and adds Gaussian noise of standard
deviation ``noise_multiplier * clip_norm`` to the sum of clipped updates
(DP-FedAvg, McMahan et al., 2018).

>>> e = epsilon(noise_multiplier=1.1, sample_rate=1.0, rounds=10, delta=1e-5)
>>> z = noise_multiplier_for(target_epsilon=e, sample_rate=1.0, rounds=10, delta=1e-5)
>>> round(z, 2)  # calibration inverts the accountant
1.1
>>> import numpy as np
>>> float(np.linalg.norm(clip(np.array([3.0, 4.0]), 1.0)))
1.0
"""

from __future__ import annotations

import numpy as np

from models._errors import FederatedError


def clip(update: np.ndarray, clip_norm: float) -> np.ndarray:
    """``update`` scaled down so its L2 norm is at most ``clip_norm`` (unchanged if smaller)."""
    norm = float(np.linalg.norm(update))
    return update if norm <= clip_norm else update * (clip_norm / norm)


def _event(noise_multiplier: float, sample_rate: float, rounds: int):
    import dp_accounting

    if noise_multiplier <= 0 or not 0 < sample_rate <= 1 or rounds < 0:
        raise FederatedError(
            f"privacy accounting needs noise_multiplier > 0, 0 < sample_rate <= 1 and rounds "
            f">= 0; got {noise_multiplier}, {sample_rate}, {rounds}"
        )
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    step = (
        gaussian if sample_rate == 1 else dp_accounting.PoissonSampledDpEvent(sample_rate, gaussian)
    )
    return dp_accounting.SelfComposedDpEvent(step, rounds)


def epsilon(*, noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """The epsilon of ``rounds`` DP-FedAvg rounds at ``delta`` (RDP accountant)."""
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(_event(noise_multiplier, sample_rate, rounds))
    return float(accountant.get_epsilon(delta))


def noise_multiplier_for(
    *, target_epsilon: float, sample_rate: float, rounds: int, delta: float
) -> float:
    """The smallest noise multiplier whose ``rounds`` rounds stay within ``target_epsilon``."""
    import dp_accounting
    from dp_accounting import rdp

    return float(
        dp_accounting.calibrate_dp_mechanism(
            rdp.RdpAccountant,
            lambda z: _event(z, sample_rate, rounds),
            target_epsilon,
            delta,
            bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
        )
    )
