"""Live rollouts on the local 3-node cluster while cameras stream at a steady rate.

The scenario is ``bench.rollout``'s: cameras -> a detector keyed by stream with
one replica per node (vehicle-1, rsu-1, hub-1) -> a sink recording every frame
with the version that processed it (``meta.version``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter

import pytest
import ray

import bench.rollout as scenario
from bench.rollout import (
    BRIGHT,
    SCORES,
    brightness,
    camera_pipeline,
    detector_model,
    register_detectors,
)
from cluster._ray_config import WORKER_NICENESS
from cluster.rollout import ReplicaVersion, RolloutRefused
from models import Registry
from operators import Operator, Resources
from operators.detection import ObjectDetector
from pipelines import Pipeline, _rollout
from pipelines._cli_rollout import register, request_from
from pipelines._rollout import RolloutRequest
from pipelines._runtime import Runtime
from tests.unit._onnx_files import identity_model

pytestmark = pytest.mark.system
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(scenario)

NODES = ["vehicle-1", "rsu-1", "hub-1"]
RATE_HZ = 60.0


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    register_detectors(root)
    return str(root)


def label(model: str) -> str:
    return ReplicaVersion.of(ObjectDetector(model=model, classes=None, carry=())).label


def stream(name: str, registry: str, request: RolloutRequest):
    return scenario.run_rollout(
        camera_pipeline(name, registry, NODES, rate_hz=RATE_HZ, model="det@1"),
        request, before=45, after=45, timeout_s=120,
    )  # fmt: skip


def assert_every_frame_accounted(out) -> None:
    """Each stream's frames 0..n-1 are all recorded or dead-lettered, once; identity holds."""
    assert out.summary.identity_holds(), out.summary.format()
    assert not out.summary.dropped
    assert out.frames_lost == 0
    dead = {tuple(d[1][:2]) for s in out.stats for d in s["dead_letters"]}
    recorded = Counter((m.source, m.seq) for m, _ in out.received)
    assert all(n == 1 for n in recorded.values())
    for cam in {m.source for m, _ in out.received}:
        seqs = sorted([q for s, q in recorded if s == cam] + [q for s, q in dead if s == cam])
        assert seqs == list(range(len(seqs))), f"{cam}: a frame is missing"


def one_switch(versions: list[str], old: str, new: str) -> bool:
    """``old, old, ..., new, new``: the stream moved once, and never went back."""
    k = versions.index(new) if new in versions else len(versions)
    return 0 < k < len(versions) and set(versions[:k]) == {old} and set(versions[k:]) == {new}


def detector_actors(stats) -> dict[str, list[dict]]:
    """Detector replicas' final figures by slot (the actor name before the version)."""
    slots: dict[str, list[dict]] = {}
    for s in stats:
        if s["operator"] == "detector":
            slots.setdefault(s["actor"].split("@", 1)[0], []).append(s)
    return slots


def test_rolling_upgrade_across_three_nodes_moves_every_stream_once_and_loses_nothing(
    ray_cluster, registry
):
    request = RolloutRequest(operator="detector", model="det@2", strategy="rolling", min_frames=5)
    out = stream("roll", registry, request)

    assert out.error is None and out.record["state"] == "completed", out.record
    assert_every_frame_accounted(out)
    assert not out.summary.dead_lettered
    old, new = label("det@1"), label("det@2")
    assert (out.record["baseline"], out.record["candidate"]) == (old, new)
    for cam, versions in out.versions().items():
        assert one_switch(versions, old, new), f"{cam}: {Counter(versions)}"
    scores = {m.meta.version: float(m.payload["scores"][0]) for m, _ in out.received}
    assert scores == {old: pytest.approx(SCORES[1]), new: pytest.approx(SCORES[2])}
    slots = detector_actors(out.stats)
    assert len({replicas[0]["node"] for replicas in slots.values()}) == 3  # three nodes
    for replicas in slots.values():  # each replaced in place, its name carrying the version
        assert len(replicas) == 2 and len({r["node"] for r in replicas}) == 1
        assert sorted(r["version"] for r in replicas) == sorted([old, new])
        assert any(r["actor"].endswith(f"@{new}") for r in replicas)
    switches = [a for a in out.record["actions"] if "Switch(" in a]
    assert len(switches) == 3  # one node at a time


def test_blue_green_starts_the_whole_new_set_warm_and_switches_it_at_once(ray_cluster, registry):
    request = RolloutRequest(
        operator="detector", model="det@2", strategy="blue-green", window_s=0.5, min_frames=5
    )
    out = stream("bluegreen", registry, request)

    assert out.error is None and out.record["state"] == "completed", out.record
    assert_every_frame_accounted(out)
    kinds = [a.split()[1].split("(")[0] for a in out.record["actions"] if "Wait(" not in a]
    assert kinds == ["Start", "Switch", "Stop", "Finish"]
    assert "slots=('0', '1', '2')" in out.record["actions"][0]
    old, new = label("det@1"), label("det@2")
    for cam, versions in out.versions().items():
        assert one_switch(versions, old, new), f"{cam}: {Counter(versions)}"


def test_canary_of_a_worse_model_is_rolled_back_and_its_dead_letters_accounted(
    ray_cluster, registry
):
    request = RolloutRequest(
        operator="detector", model="det@3", strategy="canary", share=0.34, duration_s=60,
        min_frames=20, min_quality_ratio=0.8, quality_field="scores",
    )  # fmt: skip
    out = stream("canary", registry, request)

    assert out.error is None and out.record["state"] == "rolled-back", out.record
    assert "error rate" in out.record["reason"]
    assert_every_frame_accounted(out)
    old, bad = label("det@1"), label("det@3")
    assert out.record["metrics"][old]["quality"] == pytest.approx(SCORES[1])
    canaried = {cam for cam, vs in out.versions().items() if bad in vs}
    assert len(canaried) == 1  # one stream of three: the canary's share
    for cam, versions in out.versions().items():
        assert versions[-1] == old  # every stream is back on the old version
        if cam in canaried:
            k = versions.index(bad)
            back = len(versions) - 1 - versions[::-1].index(bad)
            assert set(versions[:k]) == {old} and set(versions[k : back + 1]) == {bad}
    dead = [(s["version"], d) for s in out.stats for d in s["dead_letters"]]
    assert dead and out.summary.dead_lettered == {"detector": len(dead)}
    for version, (_, (cam, seq, _), cause) in dead:  # only the bad version, on bright frames
        assert version == bad and cam in canaried and brightness(seq) > BRIGHT
        assert "YOLOX output has 3548 rows" in cause
    collapsed = [float(m.payload["scores"][0]) for m, _ in out.received if m.meta.version == bad]
    assert collapsed and all(s == pytest.approx(SCORES[3]) for s in collapsed)


def test_ab_test_keeps_each_stream_on_one_variant_and_reports_both_side_by_side(
    ray_cluster, registry
):
    pipeline = camera_pipeline("ab", registry, NODES, rate_hz=RATE_HZ, model="det@1")
    runtime = Runtime(pipeline)
    runtime.deploy()
    sink = runtime.actors["ab/out#0"]
    got = {}

    def experiment() -> None:
        try:
            scenario._wait_progress(sink, 45)
            test = RolloutRequest(operator="detector", model="det@2", strategy="ab", share=0.34,
                                  duration_s=3.0, quality_field="scores")  # fmt: skip
            rid = _rollout.rollout("ab", test, wait=False)["id"]
            ctl = _rollout.controller("ab")
            # while it runs, the status shows both variants' figures side by side
            got["live"] = poll_status("ab", lambda r: len(r["metrics"]) == 2 and all(
                m["frames"] for m in r["metrics"].values()))  # fmt: skip
            got["test"] = ray.get(ctl.wait.remote(rid, 60))
            got["after test"] = _rollout.status("ab")[0]
            promote = RolloutRequest(operator="detector", model="det@2", min_frames=5)
            got["promoted"] = runtime.rollout(promote, timeout_s=60)
            scenario._wait_progress(sink, scenario.ray_progress(sink) + 30)
        finally:
            runtime.stop("test over")

    thread = threading.Thread(target=experiment, daemon=True)
    thread.start()
    summary = runtime.run(timeout_s=120)
    thread.join()
    out = scenario.Outcome(summary, runtime.stats, None, None, (0, 0), [
        x for s in runtime.stats if s["operator"] == "out" for x in s["snapshot"]])  # fmt: skip

    a, b = label("det@1"), label("det@2")
    test, promoted = got["test"], got["promoted"]
    assert test["state"] == "measured" and (test["baseline"], test["candidate"]) == (a, b), test
    assert f"{a}: " in test["reason"] and f"{b}: " in test["reason"]
    assert set(got["live"]["metrics"]) == {a, b}
    metrics = test["metrics"]  # counted from the test's start, side by side
    assert metrics[a]["quality"] == pytest.approx(SCORES[1])
    assert metrics[b]["quality"] == pytest.approx(SCORES[2])
    assert metrics[a]["errors"] == metrics[b]["errors"] == 0
    assert metrics[a]["frames"] > 0 and metrics[b]["frames"] > 0
    (split,) = [s for s in got["after test"]["serving"]["detector"] if s["active"] == b]
    assert split["slot"] == "ab/detector#cam-0"  # share 0.34 of 3 streams: one, on vehicle-1
    assert sorted(s["active"] for s in got["after test"]["serving"]["detector"]) == [a, a, b]
    # every frame ingested while the split stood went to its stream's one variant
    (switched_at,) = [t1 for kind, _, _, t1 in test["phases"] if kind == "Switch"]
    during = {}
    for m, _ in out.received:
        if switched_at * 1e9 <= m.ingest_ts < promoted["started_at"] * 1e9:
            during.setdefault(m.source, set()).add(m.meta.version)
    assert during == {"cam-0": {b}, "cam-1": {a}, "cam-2": {a}}
    # the promotion moved only the streams still on A; none ever went back
    assert promoted["state"] == "completed" and (promoted["baseline"], promoted["candidate"]) == (
        a, b)  # fmt: skip
    starts = [x for x in promoted["actions"] if "Start(" in x]
    assert len(starts) == 2 and not any("'0'" in x for x in starts)
    for cam, versions in out.versions().items():
        assert one_switch(versions, a, b), f"{cam}: {Counter(versions)}"
    assert_every_frame_accounted(out)
    assert not out.summary.dead_lettered


def poll_status(pipeline: str, ready, timeout_s: float = 30) -> dict:
    """The running rollout's record from ``status`` once ``ready(record)`` holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        record = _rollout.status(pipeline)[0]["rollouts"][-1]
        if ready(record) or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def test_corrupt_or_unfit_models_are_refused_before_any_replica_switches(
    ray_cluster, registry, tmp_path, capsys
):
    root = tmp_path / "reg"
    reg = Registry(root)
    reg.register("det", detector_model(0.9))  # det@1
    reg.register("det", detector_model(0.8))  # det@2: its bytes are then overwritten
    (root / "det" / "2" / "model.onnx").write_bytes(b"not an onnx model at all")
    reg.register("det", identity_model(tmp_path / "small.onnx"))  # det@3: 320x320 input
    pipeline = camera_pipeline("refuse", str(root), NODES, rate_hz=RATE_HZ, model="det@1")
    runtime = Runtime(pipeline)
    runtime.deploy()
    sink = runtime.actors["refuse/out#0"]
    errors, statuses = {}, []
    cli = argparse.ArgumentParser(prog="edgeray")
    register(cli.add_subparsers(dest="command"))

    def attempts() -> None:
        try:
            scenario._wait_progress(sink, 30)
            for model in ("det@2", "det@3", "det@9"):
                try:
                    runtime.rollout(RolloutRequest(operator="detector", model=model))
                except RolloutRefused as err:
                    errors[model] = str(err)
            statuses.extend(_rollout.status("refuse"))
            try:  # fleet-wide: finds this pipeline's detector as the user of model "det"
                _rollout.fleet_update("det@3", RolloutRequest(operator=""))
            except RolloutRefused as err:
                errors["fleet"] = str(err)
            try:  # the command line reaches the same controller from outside the driver
                args = cli.parse_args(["rollout", "refuse", "detector", "--model", "det@2"])
                args.func(args)
            except RolloutRefused as err:
                errors["cli"] = str(err)
            args = cli.parse_args(["rollout", "status", "refuse"])
            errors["status exit"] = args.func(args)
            scenario._wait_progress(sink, scenario.ray_progress(sink) + 15)
        finally:
            runtime.stop("test over")

    thread = threading.Thread(target=attempts, daemon=True)
    thread.start()
    summary = runtime.run(timeout_s=120)
    thread.join()

    assert "sha256" in errors["det@2"] and "refused before any replica switched" in errors["det@2"]
    assert "shape [1, 3, 320, 320], expected 'images' float32[1, 3, 416, 416]" in errors["det@3"]
    assert "not found" in errors["det@9"]
    assert "sha256" in errors["cli"] and errors["status exit"] == 0
    assert errors["fleet"].startswith("rollout of refuse/detector: model 'det@3' refused")
    (status,) = statuses
    old = label("det@1")
    assert [s["active"] for s in status["serving"]["detector"]] == [old] * 3
    assert f"refuse/detector#cam-1 on rsu-1: {old}\n" in capsys.readouterr().out
    assert all(not s["warm"] for s in status["serving"]["detector"])
    versions = {m.meta.version for s in runtime.stats if s["operator"] == "out"
                for m, _ in s["snapshot"]}  # fmt: skip
    assert versions == {old} and summary.identity_holds()
    assert sorted(s["actor"] for s in runtime.stats if s["operator"] == "detector") == [
        f"refuse/detector#cam-{i}" for i in range(3)
    ]


def test_cli_builds_the_request_it_is_given():
    parser = argparse.ArgumentParser(prog="edgeray")
    register(parser.add_subparsers(dest="command"))
    command = (
        "rollout cams detector --model det@3 --strategy canary --share 0.2 --duration 45 "
        "--min-quality-ratio 0.8 --quality-field scores --set score_threshold=0.4"
    )
    args = parser.parse_args(command.split(" "))
    request = request_from(args, args.target)
    assert (args.pipeline, request.operator, request.model) == ("cams", "detector", "det@3")
    assert (request.strategy, request.share, request.duration_s) == ("canary", 0.2, 45.0)
    assert request.params == {"score_threshold": 0.4} and request.quality_field == "scores"
    assert parser.parse_args(["rollout", "status"]).func.__name__ == "cmd_rollout"
    with pytest.raises(SystemExit):
        parser.parse_args(["rollout", "cams", "detector", "--strategy", "sideways"])


class Stamp(Operator):
    """Passes frames on with its ``tag``; its ``setup`` fails on node ``fail_on``."""

    inputs = ("in",)
    outputs = ("out",)
    resources = Resources(num_cpus=0.1)

    def __init__(self, tag: str, fail_on: str | None = None) -> None:
        self.tag, self.fail_on = tag, fail_on

    def setup(self, ctx) -> None:
        if ctx.node == self.fail_on:
            raise RuntimeError(f"cannot start on {ctx.node}")

    def process(self, port, message):
        yield "out", message.derive({"tag": self.tag})


def test_a_rollout_failing_midway_puts_the_moved_slots_back(ray_cluster):
    p = Pipeline("midway")
    p.source("cams", scenario.Cameras(3), rate_hz=RATE_HZ, placement={"edge.node": NODES[0]})
    p.operator(
        "stamp", Stamp("a"), keys={f"cam-{i}": {"edge.node": n} for i, n in enumerate(NODES)}
    )
    p.sink("out", scenario.ArrivalSink(), placement={"edge.node": NODES[0]})
    p.connect("cams", "stamp")
    p.connect("stamp", "out")
    request = RolloutRequest(operator="stamp", params={"tag": "b", "fail_on": "vehicle-1"},
                             min_frames=5)  # fmt: skip
    out = scenario.run_rollout(p, request, before=45, after=45, timeout_s=120)

    assert isinstance(out.error, RolloutRefused), out.error
    assert "could not start and warm up on slots 0" in str(out.error)  # vehicle-1: moved last
    assert "cannot start on vehicle-1" in str(out.error)
    (record,) = out.history
    assert record["state"] == "refused" and record["reason"].endswith(
        f"the slots it had moved are back on {record['baseline']}"
    )
    assert_every_frame_accounted(out)
    tags = {}
    for m, _ in sorted(out.received, key=lambda x: x[0].seq):
        tags.setdefault(m.source, []).append(m.payload["tag"])
    assert all(t[-1] == "a" for t in tags.values())  # every stream back on the old version
    assert "b" in tags["cam-1"] + tags["cam-2"]  # the two slots that had moved
    assert set(tags["cam-0"]) == {"a"}


def test_fleet_update_moves_every_pipeline_using_the_model_and_loses_nothing(ray_cluster, registry):
    from conftest import run_in_background

    runtimes = [
        Runtime(camera_pipeline(name, registry, NODES, rate_hz=30.0, model="det@1"))
        for name in ("fleet-a", "fleet-b")
    ]
    for runtime in runtimes:
        runtime.deploy()
    sinks = [r.actors[f"{r.p.name}/out#0"] for r in runtimes]
    with run_in_background(runtimes[0], 120) as run_a, run_in_background(runtimes[1], 120) as run_b:
        for sink in sinks:
            scenario._wait_progress(sink, 30)
        records = _rollout.fleet_update(
            "det@2", RolloutRequest(operator="", strategy="rolling", min_frames=5), timeout_s=90
        )
        for sink in sinks:
            scenario._wait_progress(sink, scenario.ray_progress(sink) + 30)

    assert [(r["pipeline"], r["operator"], r["state"]) for r in records] == [
        ("fleet-a", "detector", "completed"), ("fleet-b", "detector", "completed")
    ]  # fmt: skip
    old, new = label("det@1"), label("det@2")
    for runtime, run in zip(runtimes, (run_a, run_b), strict=True):
        received = [x for s in runtime.stats if s["operator"] == "out" for x in s["snapshot"]]
        out = scenario.Outcome(run["summary"], runtime.stats, None, None, (0, 0), received)
        assert_every_frame_accounted(out)
        for cam, versions in out.versions().items():
            assert one_switch(versions, old, new), f"{runtime.p.name} {cam}: {Counter(versions)}"


def test_a_slot_without_traffic_is_warmed_on_its_model_signature_before_it_serves(
    ray_cluster, registry
):
    pipeline = camera_pipeline("idle-slot", registry, NODES, rate_hz=RATE_HZ, streams=2)
    request = RolloutRequest(operator="detector", model="det@2", strategy="rolling", min_frames=0)
    out = scenario.run_rollout(pipeline, request, before=45, after=45, timeout_s=120)

    assert out.error is None and out.record["state"] == "completed", out.record
    assert_every_frame_accounted(out)
    boot = {b["slot"]: b for b in out.record["boot"]}
    assert boot["0"]["warmed_with"] == "the first input of its slot (cam-0 #0)"
    assert boot["1"]["warmed_with"] == "the first input of its slot (cam-1 #0)"
    assert boot["2"]["warmed_with"] == "1 model session(s) on a signature input"
    assert {m.source for m, _ in out.received} == {"cam-0", "cam-1"}  # slot 2: no traffic


def test_a_new_replica_boots_held_below_the_stream_and_serves_at_its_niceness(
    ray_cluster, registry
):
    pipeline = camera_pipeline("held-boot", registry, NODES, rate_hz=RATE_HZ)
    request = RolloutRequest(operator="detector", model="det@2", strategy="rolling", min_frames=0)
    out = scenario.run_rollout(pipeline, request, before=30, after=30, timeout_s=120)

    assert out.error is None and out.record["state"] == "completed", out.record
    assert_every_frame_accounted(out)
    assert len(out.record["boot"]) == 3
    for b in out.record["boot"]:
        assert b["not_held_because"] == ""  # a root / CAP_SYS_NICE test machine
        assert b["held_pids"] == [b["pid"]], b  # the new replica's process, and nothing else
        assert b["nice"] == WORKER_NICENESS  # the fleet's worker niceness, as the one replaced
