from __future__ import annotations

import pytest

from pipelines import Pipeline
from pipelines._runtime import run
from pipelines.testing import ListSink, ListSource

pytestmark = pytest.mark.system


def test_list_to_sink(ray_cluster):
    p = Pipeline("smoke")
    p.source(
        "src",
        ListSource([{"x": i} for i in range(20)]),
        rate_hz=200,
        placement={"edge.role": "vehicle"},
    )
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("src", "out")
    summary = run(p, timeout_s=60)
    assert summary.sinks == {"out": 20}
    assert summary.identity_holds()
