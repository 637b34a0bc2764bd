"""An endless pipeline for the `ray job stop` test: a counter on the vehicle at 50 Hz into a
ParquetSink on the hub, writing into ``$EDGERAY_DRAIN_OUT``. It runs until stopped; on
`ray job stop` the driver gets SIGINT (as `edgeray submit` asks), drains, the sink flushes,
and the runtime prints its summary."""

from __future__ import annotations

import os

from operators import Message, Source
from operators.parquet_sink import ParquetSink
from pipelines import Pipeline

OUT_ENV = "EDGERAY_DRAIN_OUT"


class CountUp(Source):
    """0, 1, 2, ... on ``out``, forever."""

    outputs = ("out",)

    def __init__(self) -> None:
        self.n = 0

    def poll(self, now):
        m = Message("", self.n, now, {"x": self.n})
        self.n += 1
        return [("out", m)]


def build() -> Pipeline:
    p = Pipeline("drain")
    p.source("count", CountUp(), rate_hz=50, placement={"edge.role": "vehicle"})
    out = os.environ.get(OUT_ENV, "out/drain")
    p.sink("store", ParquetSink(out, rows_per_file=10), placement={"edge.role": "hub"})
    p.connect("count", "store")
    return p


if __name__ == "__main__":
    from pipelines import launch

    launch(build)
