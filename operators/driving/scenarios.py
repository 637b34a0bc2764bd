"""Scripted driving scenarios, built by name; ``held_out`` ones are for evaluation only.

A scenario is plain, frozen data: the road, the ego's start, the scripted actors and
signs, the lighting and how long it lasts. ``scenario(name, seed=..., held_out=...)``
draws its free parameters (speeds, distances, curvature, lighting) from a generator
seeded by ``(name, seed, held_out)``: the same arguments give the same scenario, and a
held-out scenario never equals a training one (its seeds and lighting ranges differ).

>>> sc = scenario("lead_emergency_brake")
>>> sc.name, sc.duration_s, sc.held_out
('lead_emergency_brake', 10.0, False)
>>> scenario("cut_in", seed=3) == scenario("cut_in", seed=3)
True
>>> scenario("cut_in", held_out=True) == scenario("cut_in")
False
>>> sorted(SCENARIOS)[:3]
['car_following', 'cut_in', 'lane_curve']
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from operators._errors import OperatorError
from operators.driving.world import Actor, EgoState, Road, SignSpec, World

#: GTSRB class ids used by the scenarios (see ../shared/data/MANIFEST.md).
SPEED_30, SPEED_50, SPEED_70, YIELD, STOP, NO_ENTRY = 1, 2, 4, 13, 14, 17

_CAR_COLORS: tuple[tuple[int, int, int], ...] = (
    (40, 40, 190), (180, 90, 30), (200, 200, 200), (40, 40, 40), (30, 150, 200), (90, 120, 40),
)  # fmt: skip
_CLOTHES: tuple[tuple[int, int, int], ...] = ((160, 40, 40), (40, 120, 200), (60, 60, 60))


@dataclass(frozen=True)
class Lighting:
    """Image gain (``contrast``), offset (``brightness``) and Gaussian noise sigma (grey levels)."""

    brightness: float = 0.0
    contrast: float = 1.0
    noise: float = 3.0


@dataclass(frozen=True)
class Scenario:
    """One scripted drive: road, ego start, actors, signs, lighting and duration.

    ``weave`` = ``(amplitude m, period s)``: the lateral offset the ego follows inside
    its lane while no steering command has arrived (so lane-offset truth varies).
    """

    name: str
    duration_s: float
    road: Road
    ego: EgoState
    actors: tuple[Actor, ...] = ()
    signs: tuple[SignSpec, ...] = ()
    lighting: Lighting = Lighting()
    weave: tuple[float, float] = (0.0, 8.0)
    seed: int = 0
    held_out: bool = False

    def world(self) -> World:
        """The scenario's geometry (road sampled far enough for the whole drive)."""
        reach = self.ego.s + (self.ego.v + 10.0) * self.duration_s + 300.0
        furthest = max([a.s0 + a.v0 * self.duration_s for a in self.actors] + [reach])
        return World(road=self.road, actors=self.actors, signs=self.signs, length=furthest + 300.0)


def scenario(name: str, *, seed: int = 0, held_out: bool = False) -> Scenario:
    """The scenario called ``name`` (one of ``SCENARIOS``), its free parameters drawn from
    ``(name, seed, held_out)``."""
    try:
        build = SCENARIOS[name]
    except KeyError:
        raise OperatorError(
            f"unknown driving scenario {name!r}; use one of {sorted(SCENARIOS)}"
        ) from None
    rng = np.random.default_rng([zlib.crc32(name.encode()), seed, 1 if held_out else 0])
    return build(_Draw(rng, held_out), seed, held_out)


class _Draw:
    """Random parameters for one scenario; held-out scenarios get darker / noisier light."""

    def __init__(self, rng: np.random.Generator, held_out: bool) -> None:
        self.rng, self.held_out = rng, held_out

    def u(self, lo: float, hi: float) -> float:
        return round(float(self.rng.uniform(lo, hi)), 3)

    def pick(self, options: tuple) -> object:
        return options[int(self.rng.integers(len(options)))]

    def lighting(self) -> Lighting:
        if self.held_out:
            return Lighting(self.u(-45, 25), self.u(0.7, 1.15), self.u(3.0, 6.0))
        return Lighting(self.u(-25, 25), self.u(0.85, 1.15), self.u(1.5, 4.0))

    def road(self, curve: float = 0.0) -> Road:
        bend = curve if curve else self.u(-1, 1) / 1500
        return Road(segments=((self.u(60, 120), 0.0), (400.0, bend), (2000.0, 0.0)))


Builder = Callable[[_Draw, int, bool], Scenario]


def _car(i: int, draw: _Draw, s0: float, v0: float, **kw) -> Actor:
    return Actor(id=i, kind="car", s0=s0, v0=v0, color=draw.pick(_CAR_COLORS), **kw)


def car_following(draw: _Draw, seed: int, held_out: bool) -> Scenario:
    v = draw.u(12, 18)
    lead = _car(1, draw, s0=30 + draw.u(15, 30), v0=v,
                accel=((3.0, -1.0), (6.0, 0.8), (10.0, 0.0)))  # fmt: skip
    left = _car(2, draw, s0=30 + draw.u(-5, 40), v0=v + draw.u(-2, 2), d0=3.5)
    truck = Actor(id=3, kind="truck", s0=30 + draw.u(50, 80), v0=v - 1.0, d0=-3.5,
                  size=(9.0, 2.5, 3.2), color=(170, 170, 160))  # fmt: skip
    signs = (SignSpec(10, SPEED_70, s=30 + draw.u(60, 120)),)
    return Scenario("car_following", 15.0, draw.road(), EgoState(s=30.0, v=v),
                    (lead, left, truck), signs, draw.lighting(), (draw.u(0.1, 0.35), 7.0),
                    seed, held_out)  # fmt: skip


def cut_in(draw: _Draw, seed: int, held_out: bool) -> Scenario:
    v = draw.u(14, 18)
    lead = _car(1, draw, s0=30 + draw.u(45, 60), v0=v)
    t0 = draw.u(3.0, 5.0)
    cutter = _car(2, draw, s0=30 + draw.u(12, 20), v0=v - draw.u(1, 3), d0=-3.5,
                  lateral=((t0, -3.5), (t0 + 2.5, 0.0)))  # fmt: skip
    return Scenario("cut_in", 12.0, draw.road(), EgoState(s=30.0, v=v), (lead, cutter), (),
                    draw.lighting(), (draw.u(0.0, 0.2), 6.0), seed, held_out)  # fmt: skip


def lead_emergency_brake(draw: _Draw, seed: int, held_out: bool) -> Scenario:
    v = draw.u(16, 22)
    lead = _car(1, draw, s0=30 + draw.u(25, 35), v0=v,
                accel=((draw.u(3.0, 4.5), -draw.u(7.0, 9.0)),))  # fmt: skip
    other = _car(2, draw, s0=30 + draw.u(-10, 20), v0=v + 1, d0=3.5)
    return Scenario("lead_emergency_brake", 10.0, draw.road(), EgoState(s=30.0, v=v),
                    (lead, other), (), draw.lighting(), (draw.u(0.0, 0.2), 6.0),
                    seed, held_out)  # fmt: skip


def pedestrian_crossing(draw: _Draw, seed: int, held_out: bool) -> Scenario:
    v = draw.u(9, 12)
    at = 30 + draw.u(55, 70)
    start, walk = draw.u(1.5, 3.0), draw.u(1.2, 1.6)
    side = draw.pick((-1.0, 1.0))
    d0 = 7.0 * side
    ped = Actor(id=1, kind="pedestrian", s0=at, d0=d0, size=(0.5, 0.5, 1.75),
                lateral=((start, d0), (start + 14.0 / walk, -d0)),
                color=draw.pick(_CLOTHES))  # fmt: skip
    parked = _car(2, draw, s0=at + draw.u(15, 30), v0=0.0, d0=-3.5)
    return Scenario("pedestrian_crossing", 12.0, draw.road(), EgoState(s=30.0, v=v),
                    (ped, parked), (), draw.lighting(), (draw.u(0.0, 0.2), 6.0),
                    seed, held_out)  # fmt: skip


def stop_sign(draw: _Draw, seed: int, held_out: bool) -> Scenario:
    v = draw.u(9, 12)
    at = 30 + draw.u(60, 90)
    signs = (SignSpec(10, STOP, s=at, stop_line=True), SignSpec(11, YIELD, s=at + 60),
             SignSpec(12, NO_ENTRY, s=at + 35, d=6.3))  # fmt: skip
    cross = _car(1, draw, s0=at + draw.u(40, 70), v0=draw.u(6, 10), d0=3.5)
    return Scenario("stop_sign", 14.0, draw.road(), EgoState(s=30.0, v=v), (cross,), signs,
                    draw.lighting(), (draw.u(0.0, 0.2), 6.0), seed, held_out)  # fmt: skip


def speed_limit_change(draw: _Draw, seed: int, held_out: bool) -> Scenario:
    v = draw.u(13, 15)
    first = 30 + draw.u(40, 60)
    signs = (SignSpec(10, SPEED_50, s=first), SignSpec(11, SPEED_30, s=first + draw.u(90, 120)),
             SignSpec(12, SPEED_50, s=first + draw.u(190, 220)))  # fmt: skip
    lead = _car(1, draw, s0=30 + draw.u(40, 70), v0=v, d0=3.5)
    return Scenario("speed_limit_change", 20.0, draw.road(), EgoState(s=30.0, v=v), (lead,),
                    signs, draw.lighting(), (draw.u(0.0, 0.3), 8.0), seed,
                    held_out)  # fmt: skip


def lane_curve(draw: _Draw, seed: int, held_out: bool) -> Scenario:
    v = draw.u(13, 17)
    k1, k2 = draw.u(1 / 250, 1 / 120), -draw.u(1 / 300, 1 / 150)
    road = Road(segments=((draw.u(20, 40), 0.0), (draw.u(80, 120), k1), (draw.u(40, 60), 0.0),
                          (draw.u(80, 120), k2), (2000.0, 0.0)))  # fmt: skip
    lead = _car(1, draw, s0=30 + draw.u(35, 50), v0=v)
    signs = (SignSpec(10, SPEED_50, s=30 + draw.u(30, 60)),)
    return Scenario("lane_curve", 15.0, road, EgoState(s=30.0, v=v), (lead,), signs,
                    draw.lighting(), (draw.u(0.1, 0.4), 6.0), seed, held_out)  # fmt: skip


#: Scenario builders by name.
SCENARIOS: Mapping[str, Builder] = MappingProxyType(
    {
        "car_following": car_following,
        "cut_in": cut_in,
        "lead_emergency_brake": lead_emergency_brake,
        "pedestrian_crossing": pedestrian_crossing,
        "stop_sign": stop_sign,
        "speed_limit_change": speed_limit_change,
        "lane_curve": lane_curve,
    }
)
