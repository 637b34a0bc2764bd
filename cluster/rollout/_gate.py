"""``Gate``: judges a candidate version's metrics against the baseline's.

``verdict(candidate, baseline)`` is ``Promote``, ``Wait`` (not enough frames
yet) or ``Rollback(reason)`` when a threshold is breached: error rate above
``max_error_rate``, p99 latency above ``max_p99_ratio`` x the baseline's, or the
operator's quality signal (e.g. mean detection confidence) below
``min_quality_ratio`` x the baseline's.

>>> from cluster.rollout._state import VersionMetrics
>>> gate = Gate(min_frames=10, min_quality_ratio=0.8)
>>> gate.verdict(VersionMetrics(frames=50, quality=0.3), VersionMetrics(frames=500, quality=0.9))
Rollback(reason='quality 0.300 < 0.8 x baseline 0.900')
>>> gate.verdict(VersionMetrics(frames=3), VersionMetrics(frames=500))
Wait(reason='3 of 10 frames seen')
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.rollout._state import VersionMetrics


@dataclass(frozen=True)
class Promote:
    pass


@dataclass(frozen=True)
class Wait:
    reason: str


@dataclass(frozen=True)
class Rollback:
    reason: str


Verdict = Promote | Wait | Rollback


@dataclass(frozen=True, kw_only=True)
class Gate:
    min_frames: int = 20
    max_error_rate: float = 0.01
    max_p99_ratio: float | None = None
    min_quality_ratio: float | None = None

    def verdict(self, candidate: VersionMetrics, baseline: VersionMetrics) -> Verdict:
        # A breach counts as soon as it is seen: a version that dead-letters is worse at once.
        if candidate.errors and candidate.error_rate > self.max_error_rate:
            return Rollback(
                f"error rate {candidate.error_rate:.3f} > {self.max_error_rate} "
                f"({candidate.errors} of {candidate.frames + candidate.errors} frames)"
            )
        if candidate.frames < self.min_frames:
            return Wait(f"{candidate.frames} of {self.min_frames} frames seen")
        ratio, p99, base = self.max_p99_ratio, candidate.p99_ms, baseline.p99_ms
        if ratio is not None and p99 is not None and base and p99 > ratio * base:
            return Rollback(f"p99 {p99:.1f} ms > {ratio} x baseline {base:.1f} ms")
        ratio, q, base = self.min_quality_ratio, candidate.quality, baseline.quality
        if ratio is not None and base is not None and (q is None or q < ratio * base):
            shown = "none" if q is None else f"{q:.3f}"
            return Rollback(f"quality {shown} < {ratio} x baseline {base:.3f}")
        return Promote()
