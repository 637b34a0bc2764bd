"""Synthetic air quality at a junction: diurnal shape, traffic emissions, noise, episodes.

PM2.5 (ug/m3) and NO2 (ug/m3) follow a city's daily pattern (a morning and an evening
rush-hour bump over a night-time floor), rise with the NOx the junction's approach
lanes emit in SUMO, carry AR(1) sensor noise, and jump during injected pollution
``Episode`` s. Pure functions of (time, emissions, noise state): the source keeps the
noise state and the random generator.

>>> round(diurnal(8 * 3600.0)[0], 1), round(diurnal(3 * 3600.0)[0], 1)   # PM2.5 at 8:00, 3:00
(21.0, 9.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Night-time floor and rush-hour amplitude of (PM2.5, NO2), ug/m3.
FLOOR = (9.0, 18.0)
RUSH = (12.0, 30.0)
#: ug/m3 of NO2 per mg/s of NOx emitted on a junction's approaches (a local dispersion guess).
NO2_PER_NOX = 0.15
PM_PER_NOX = 0.03


@dataclass(frozen=True)
class Episode:
    """An injected pollution episode at one intersection (simulated seconds)."""

    intersection: str
    start_s: float
    duration_s: float
    pm25: float = 60.0
    no2: float = 120.0

    def active(self, intersection: str, t_s: float) -> bool:
        return (
            intersection == self.intersection
            and self.start_s <= t_s < self.start_s + self.duration_s
        )


def diurnal(time_of_day_s: float) -> tuple[float, float]:
    """(PM2.5, NO2) background at a time of day: rush-hour bumps at 8:00 and 18:00."""
    h = (time_of_day_s / 3600.0) % 24.0
    bump = math.exp(-(((h - 8.0) / 1.5) ** 2)) + 0.8 * math.exp(-(((h - 18.0) / 2.0) ** 2))
    return FLOOR[0] + RUSH[0] * bump, FLOOR[1] + RUSH[1] * bump


def reading(
    time_of_day_s: float, nox_mg_s: float, noise: tuple[float, float], episode: Episode | None
) -> tuple[float, float]:
    """(PM2.5, NO2) a sensor reports: background + traffic + noise + episode, never below 0."""
    pm, no2 = diurnal(time_of_day_s)
    pm += PM_PER_NOX * nox_mg_s + noise[0]
    no2 += NO2_PER_NOX * nox_mg_s + noise[1]
    if episode is not None:
        pm, no2 = pm + episode.pm25, no2 + episode.no2
    return max(pm, 0.0), max(no2, 0.0)
