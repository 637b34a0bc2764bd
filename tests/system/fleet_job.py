"""A small real pipeline for the fleet tests, one operator per node role.

``__main__`` runs it (inside a Ray job, on the cluster ``RAY_ADDRESS`` names) and prints,
as one JSON line, where each replica ran, as seen from inside the actor.
"""

from __future__ import annotations

import json

from operators import Operator, Resources
from pipelines import Pipeline, Runtime
from pipelines.testing import ListSink, ListSource

#: node role -> the operator placed there
ROLES = {"vehicle": "src", "rsu": "relay", "hub": "out"}


class Relay(Operator):
    """Passes messages on (``in`` -> ``out``)."""

    inputs = ("in",)
    outputs = ("out",)
    resources = Resources(num_cpus=0.1)

    def process(self, port, message):
        yield "out", message


def build() -> Pipeline:
    p = Pipeline("fleet-probe")
    p.source("src", ListSource([{"x": i} for i in range(20)]), placement={"edge.role": "vehicle"})
    p.operator("relay", Relay(), placement={"edge.role": "rsu"})
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("src", "relay")
    p.connect("relay", "out")
    return p


if __name__ == "__main__":
    runtime = Runtime(build())
    runtime.run(timeout_s=120)
    where = {
        role: {"actor": f"fleet-probe/{op}#0", **runtime.placed[f"fleet-probe/{op}#0"]}
        for role, op in ROLES.items()
    }
    print("FLEET-PROBE " + json.dumps(where, sort_keys=True), flush=True)
