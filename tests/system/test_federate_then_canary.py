"""``edgeray federate SPEC --rounds 2 --strategy fedavg --then canary`` end to end, on a live
pipeline.

The session's local cluster (vehicle-1, rsu-1, hub-1) runs a pipeline whose
``SignRecognizer`` (one replica per node, keyed by stream) classifies sign crops with
``signs@1`` from the registry. While it streams, ``pipelines.federate.federate`` (what
``edgeray federate ... --then canary`` calls) trains the same three nodes' local data for
two rounds, registers each round's model as ``signs@2`` and ``signs@3`` with its
evaluation, and hands the best one to a canary rollout of that operator on the live
pipeline.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
import ray

from models import Registry
from models.federated import write_partition
from models.federated.testing import class_patterns
from operators import Message, Resources, Source
from operators.signs import DEFAULT_MODEL, NUM_CLASSES, SignRecognizer
from pipelines import Pipeline
from pipelines.federate import federate, spec_from_dict
from pipelines.testing import ListSink

pytestmark = pytest.mark.system
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

NODES = ["vehicle-1", "rsu-1", "hub-1"]
PIPELINE = "signs-live"


class SignCrops(Source):
    """One stream per node (``cam-0``..), each frame a 32x32 sign crop and its box, no end."""

    outputs = ("frames",)
    resources = Resources(num_cpus=0.1)

    def __init__(self, streams: int) -> None:
        self.streams, self.n = streams, 0
        self.crops, _ = class_patterns(num_classes=NUM_CLASSES, per_class=1, seed=7)

    def poll(self, now: int):
        stream, seq = self.n % self.streams, self.n // self.streams
        self.n += 1
        payload = {
            "image": self.crops[self.n % len(self.crops)],
            "boxes": np.array([[0, 0, 32, 32]], np.float32),
            "classes": np.array([2], np.int32),
        }
        return [("frames", Message(f"cam-{stream}", seq, now, payload))]

    def snapshot(self) -> int:
        return self.n

    def restore(self, state: int) -> None:
        self.n = state


def signs_pipeline(registry: str) -> Pipeline:
    """Crops on vehicle-1 -> a sign recognizer per node (``signs@1``) -> a recording sink."""
    p = Pipeline(PIPELINE, models=registry)
    p.source("cams", SignCrops(len(NODES)), rate_hz=30.0, placement={"edge.node": NODES[0]})
    recognizer = SignRecognizer(model="signs@1", colour=False, score_threshold=0.0)
    recognizer.resources = Resources(num_cpus=0.2)  # old and new replica fit on a node together
    p.operator(
        "signs", recognizer, keys={f"cam-{i}": {"edge.node": n} for i, n in enumerate(NODES)}
    )
    p.sink("out", ListSink(), placement={"edge.node": NODES[0]})
    p.connect("cams", "signs.detections", window=8)
    p.connect("signs", "out", window=8)
    return p


def wait_progress(sink: Any, n: int) -> None:
    """Poll the sink's processed count (a state query of the running actor) until ``n``,
    every 20 ms (a poll back to back would load the 2 cores the pipeline runs on)."""
    while ray.get(sink.progress.remote()) < n:
        time.sleep(0.02)


def test_federate_then_canary_rolls_the_best_round_out_to_the_live_pipeline(ray_cluster, tmp_path):
    from pipelines._runtime import Runtime

    # prepare: the fleet runs signs@1 (the committed classifier); each node holds its own crops
    registry = Registry(tmp_path / "models")
    registry.register("signs", DEFAULT_MODEL, produced_by="the committed gtsrb-signs model")
    for i, node in enumerate(NODES):
        write_partition(
            tmp_path / "data" / node,
            class_patterns(num_classes=NUM_CLASSES, per_class=3, noise=60, seed=i),
            class_patterns(num_classes=NUM_CLASSES, per_class=1, noise=60, seed=50 + i),
        )
    spec = spec_from_dict(
        {
            "federation": {
                "model": "signs", "nodes": NODES, "data_root": str(tmp_path / "data"),
                "num_classes": NUM_CLASSES, "hidden": [16], "rounds": 2, "min_clients": 3,
                "lr": 0.05, "batch_size": 16, "strategy": "fedavg",
            },
            "rollout": {
                "pipeline": PIPELINE, "operator": "signs", "share": 0.34, "duration_s": 2.0,
                "min_frames": 10,
            },
        },
        source="test spec",
    )  # fmt: skip
    runtime = Runtime(signs_pipeline(str(tmp_path / "models")))
    runtime.deploy()
    sink = runtime.actors[f"{PIPELINE}/out#0"]
    got: dict[str, Any] = {}

    def train_then_canary() -> None:
        try:
            wait_progress(sink, 30)
            got["result"] = federate(spec, registry=registry, then="canary", log=lambda _: None)
            wait_progress(sink, ray.get(sink.progress.remote()) + 30)
        except Exception as err:  # reported below; the stream must still stop
            got["error"] = err
        finally:
            runtime.stop("federate-then-canary test over")

    # execute: the federation and its canary run while the pipeline streams
    thread = threading.Thread(target=train_then_canary, daemon=True)
    thread.start()
    summary = runtime.run(timeout_s=240)
    thread.join()

    # assert: every round registered with its evaluation, the best one picked
    assert "error" not in got, got
    result = got["result"]
    versions = registry.versions("signs")
    assert [m.version for m in versions] == [1, 2, 3]
    for m, metrics in zip(versions[1:], result.history, strict=True):
        assert m.parent == m.version - 1
        assert f"federated round {metrics.server_round}/2, fedavg" in m.produced_by
        assert m.metrics["clients"] == 3 and m.metrics["round"] == metrics.server_round
        assert m.metrics["client_accuracy"] == pytest.approx(metrics.mean_client_accuracy)
    assert (
        result.best.version == max(versions[1:], key=lambda m: m.metrics["client_accuracy"]).version
    )

    # the canary ran on the live pipeline and ended as its gate decided: promoted to every slot
    record = result.rollout
    assert record["state"] == "completed" and record["reason"] == "canary passed its gate", record
    old, new = record["baseline"], record["candidate"]
    assert (old.split("+")[1], new.split("+")[1]) == ("signs@1", result.best.ref)
    canary = record["metrics"][new]
    assert canary["frames"] >= 10 and canary["errors"] == 0
    switched = [re.findall(r"'(\d+)'", a.split("slots=")[1].split(")")[0])
                for a in record["actions"] if "Switch(" in a]  # fmt: skip
    assert [len(s) for s in switched] == [1, 2]  # one slot of three first, then the rest
    assert sorted(switched[0] + switched[1]) == ["0", "1", "2"]

    # every frame the source emitted was recorded once; each stream moved to the new version
    # once and never went back
    received = [m for s in runtime.stats if s["operator"] == "out" for m in s["snapshot"]]
    assert summary.identity_holds(), summary.format()
    assert not summary.dropped and not summary.dead_lettered
    recorded = Counter((m.source, m.seq) for m in received)
    assert all(n == 1 for n in recorded.values())
    assert sum(summary.sources.values()) == len(recorded)  # none lost
    by_stream: dict[str, list[str]] = {}
    for m in sorted(received, key=lambda m: (m.source, m.seq)):
        by_stream.setdefault(m.source, []).append(m.meta.version)
    assert sorted(by_stream) == ["cam-0", "cam-1", "cam-2"]
    for cam, seen in by_stream.items():
        k = seen.index(new) if new in seen else len(seen)
        assert 0 < k < len(seen) and set(seen[:k]) == {old} and set(seen[k:]) == {new}, (
            f"{cam}: {Counter(seen)}"
        )
