"""A real (tiny) pipeline for `edgeray run` against the test fleet: vehicle → hub."""

from __future__ import annotations

from pipelines import Pipeline
from pipelines.testing import ListSink, ListSource


def build() -> Pipeline:
    p = Pipeline("fleet-run")
    p.source("src", ListSource([{"x": i} for i in range(20)]), placement={"edge.role": "vehicle"})
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("src", "out")
    return p


if __name__ == "__main__":
    from pipelines._runtime import run

    run(build())
