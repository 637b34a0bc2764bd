"""Signal-control policies: one ``decide(view, memory) -> green phase`` object per file.

``FixedTime`` hands the junction to SUMO's own fixed-time program; ``Webster`` runs
cycles whose green splits follow the measured flow ratios (updated once per cycle, on
a common cycle and green-wave offset when the hub sends a plan); ``MaxPressure`` gives
green to the phase whose served lanes have the most vehicles waiting relative to the
lanes they feed. ``POLICIES`` maps the names a pipeline definition uses to classes.
"""

from operators.city.policies._view import FIXED, JunctionView, view_of
from operators.city.policies.fixed_time import FixedTime
from operators.city.policies.max_pressure import MaxPressure
from operators.city.policies.webster import Webster

POLICIES = {"fixed": FixedTime, "webster": Webster, "max-pressure": MaxPressure}

__all__ = ["FIXED", "POLICIES", "FixedTime", "JunctionView", "MaxPressure", "Webster", "view_of"]
