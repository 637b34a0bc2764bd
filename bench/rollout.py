"""What does a live rollout cost a stream, and is a bad version caught?

A camera pipeline streams at a steady rate on a local multi-node cluster: one
source of several camera streams -> an ``ObjectDetector`` keyed by stream, one
replica per vehicle node, its model a registry reference -> a sink that
records each frame's arrival. The detector models are tiny YOLOX-shaped ONNX
files (``detector_model``): ``det@1`` and ``det@2`` report a car with
confidence 0.9 / 0.85; ``det@3`` is really worse: its confidence collapses to
0.32 and it breaks (a wrongly shaped output, dead-lettered) on bright frames.

Figures, each against a peer measured in the same run:

- ``frames_lost``: frames the sources emitted that are in no bucket (recorded,
  dropped, dead-lettered), summed over the rolling upgrades, a blue-green
  switch and a canary of ``det@3`` that must be rolled back. Must be 0.
- ``p99_ratio_during_upgrade``: end-to-end p99 latency of the frames ingested
  while the rolling upgrade ran, over the p99 of the same run's frames in the
  second half of the time before it began (steady state). Target <= 2. The
  rolling run is repeated (3 times; once with ``--quick``): every run's ratio
  is in ``p99_ratio_runs``, the figures shown are the median run's. Beside
  it, the same ratio for the frames ingested while replicas were starting
  (``Start``: a new process loads and warms its model) and while slots
  switched (``Switch``), to tell the two costs apart. Each batch of the
  rolling upgrade is verified on 10 frames of its own before the next starts.
  ``p99_ratio_bare_actor_starts``: the peer without edgeray in it, the same
  ratio while a bare Ray actor (no operator, no model) starts on each node in
  turn, one every ~0.8 s like the rolling batches: what starting any Ray
  worker process costs the stream on these shared cores (a worker boots for
  ~0.8 s of CPU at the stream's own niceness; a rollout holds its new
  replicas' boot at nice 19, ``pipelines._replica_start``, so the peer is what
  the rollout would cost without that).
  ``boot_held_replicas``: of the replicas the median run started, how many
  booted held below the stream (``held/started``).
  ``other_load_cores_steady`` / ``..._during_upgrade`` (``..._runs``: every
  run's pair): cores that processes outside the benchmark kept busy in each
  window (``OtherLoad``): they compete with the stream for the same cores, so a
  ratio means little where these differ.
- ``canary_rolled_back``: the canary of ``det@3`` ended ``rolled-back``.
- ``upgrade_s_by_replicas`` and ``upgrade_s_per_replica_ratio``: seconds to
  roll N replicas (batch 1), for N = 1.. nodes; the ratio of seconds per
  replica at the largest N over N = 1 (near 1: time grows with batches, not
  with frames). ``upgrade_s_all_in_one_batch``: every replica in one batch
  (their processes start together on the shared cores).

Run: ``python -m bench.rollout`` (``--quick``: 3 nodes, shorter streams). The
last line printed is one JSON object; a full run writes it to
``bench/results/rollout.json``, a quick one to ``rollout.quick.json``.
The system tests (``tests/system/test_rollout.py``) reuse this scenario.
"""

from __future__ import annotations

import os

# Before Ray is imported: it decides at import whether a node binds to 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local instance

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import Registry
from operators import Message, Resources, Sink, Source
from operators.detection import ObjectDetector
from pipelines import Pipeline, RunSummary
from pipelines._rollout import RolloutRequest, status
from pipelines._runtime import Runtime

RESULTS = Path(__file__).parent / "results"
#: Confidence each registered version reports for its one car; ``det@3`` also breaks on
#: frames brighter than ``BRIGHT``.
SCORES = {1: 0.9, 2: 0.85, 3: 0.32}
BAD_VERSION = 3
BRIGHT = 200
IMAGE = (48, 64, 3)
#: Seconds between two looks at the sink's progress. Polled back to back, the driver and the
#: sink kept most of a core busy while the stream ran before a rollout but not during it (the
#: rollout call waits), so the steady and the upgrade windows were measured under unequal load.
PROGRESS_POLL_S = 0.02


# -- the scenario ---------------------------------------------------------------------------------
def detector_model(score: float, *, breaks_when_bright: bool = False) -> bytes:
    """A YOLOX-shaped ONNX model (``images`` 1x3x416x416 -> ``output`` 1xNx85): one car at
    ``score``; with ``breaks_when_bright`` it emits one row too few (which ``decode`` refuses)
    for an image whose mean is above ``BRIGHT``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows = np.zeros((1, 3549, 85), np.float32)
    rows[0, 0, :5] = [0.5, 0.5, np.log(2), np.log(2), score]
    rows[0, 0, 5 + 2] = 1.0  # class 2: car
    consts = {
        "rows": rows,
        "zero": np.zeros((1, 1, 1), np.float32),
        "bright": np.array(BRIGHT, np.float32),
        "full": np.array([3549], np.int64),
        "start": np.array([0], np.int64),
        "axis": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["rows", "nothing"], ["all_rows"]),
    ]
    if breaks_when_bright:
        nodes += [
            helper.make_node("Greater", ["mean", "bright"], ["is_bright"]),
            helper.make_node("Cast", ["is_bright"], ["one_less"], to=TensorProto.INT64),
            helper.make_node("Sub", ["full", "one_less"], ["end"]),
            helper.make_node("Slice", ["all_rows", "start", "end", "axis"], ["output"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["all_rows"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "tiny-yolox",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 416, 416])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, None, 85])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def register_detectors(root: str | Path) -> Registry:
    """``det@1`` (stable), ``det@2`` and the bad ``det@3`` in a registry at ``root``."""
    registry = Registry(root)
    for version, score in SCORES.items():
        bad = version == BAD_VERSION
        registry.register(
            "det", detector_model(score, breaks_when_bright=bad),
            metrics={"confidence": score}, parent=version - 1 or None,
            produced_by="bench.rollout.detector_model",
        )  # fmt: skip
    registry.alias("det", "stable", 1)
    return registry


class Cameras(Source):
    """``streams`` cameras (``cam-0``..), one frame each per poll in turn, without end.

    A frame's pixels are one grey value; every 8th frame of a stream is bright
    (above ``BRIGHT``), the rest dark, so ``det@3`` breaks on known frames.
    """

    outputs = ("frames",)
    resources = Resources(num_cpus=0.1)

    def __init__(self, streams: int) -> None:
        self.streams, self.n = streams, 0

    def poll(self, now: int):
        stream, seq = self.n % self.streams, self.n // self.streams
        self.n += 1
        image = np.full(IMAGE, brightness(seq), np.uint8)
        return [("frames", Message(f"cam-{stream}", seq, now, {"image": image}))]

    def snapshot(self) -> int:
        return self.n

    def restore(self, state: int) -> None:
        self.n = state


def brightness(seq: int) -> int:
    return 250 if seq % 8 == 7 else (seq * 7) % 150


class ArrivalSink(Sink):
    """Keeps every message on ``in`` with its arrival time (wall clock, ns)."""

    inputs = ("in",)
    resources = Resources(num_cpus=0.1)

    def __init__(self) -> None:
        self.received: list[tuple[Message, int]] = []

    def process(self, port: str, message: Message):
        self.received.append((message, time.time_ns()))
        return ()

    def snapshot(self) -> list[tuple[Message, int]]:
        return list(self.received)

    def restore(self, state: list[tuple[Message, int]]) -> None:
        self.received = list(state)


def camera_pipeline(
    name: str,
    registry: str | Path,
    nodes: list[str],
    *,
    rate_hz: float,
    model: str = "det@1",
    streams: int | None = None,
) -> Pipeline:
    """Cameras on ``nodes[0]`` -> one detector replica per node (keyed by stream) -> sink.

    ``streams`` cameras (one per node by default; fewer leave the last nodes' replicas
    without traffic)."""
    p = Pipeline(name, models=str(registry))
    cameras = Cameras(len(nodes) if streams is None else streams)
    p.source("cams", cameras, rate_hz=rate_hz, placement={"edge.node": nodes[0]})
    detector = ObjectDetector(model=model, classes=None, carry=())
    detector.resources = Resources(num_cpus=0.2)  # old and new replica fit on a node together
    p.operator(
        "detector", detector,
        keys={f"cam-{i}": {"edge.node": node} for i, node in enumerate(nodes)},
    )  # fmt: skip
    p.sink("out", ArrivalSink(), placement={"edge.node": nodes[0]})
    p.connect("cams", "detector", window=8)
    p.connect("detector", "out", window=8)
    return p


@dataclass
class Outcome:
    """One streaming run with one rollout in the middle."""

    summary: RunSummary
    stats: list[dict[str, Any]]
    record: dict[str, Any] | None
    error: BaseException | None
    window_ns: tuple[int, int]  # wall clock when the rollout began and ended
    received: list[tuple[Message, int]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # every rollout's record

    @property
    def frames_lost(self) -> int:
        """Frames the source emitted that are neither recorded, dropped nor dead-lettered."""
        emitted = sum(self.summary.sources.values())
        recorded = len({m.key for m, _ in self.received})
        dead = sum(self.summary.dead_lettered.values())
        return emitted - recorded - dead - sum(self.summary.dropped.values())

    def latency_ms(self, since_ns: int, until_ns: int) -> list[float]:
        """End-to-end latency of the frames ingested in ``[since_ns, until_ns)``."""
        return [
            (t - m.ingest_ts) / 1e6 for m, t in self.received if since_ns <= m.ingest_ts < until_ns
        ]

    def versions(self) -> dict[str, list[str]]:
        """Per stream, the version that processed each recorded frame, in frame order."""
        by_stream: dict[str, list[tuple[int, str]]] = {}
        for m, _ in self.received:
            by_stream.setdefault(m.source, []).append((m.seq, m.meta.version))
        return {s: [v for _, v in sorted(pairs)] for s, pairs in by_stream.items()}


def run_rollout(
    pipeline: Pipeline, request: RolloutRequest, *, before: int, after: int, timeout_s: float = 240
) -> Outcome:
    """Stream; once the sink has ``before`` frames roll ``request`` out; stop ``after`` frames
    after it ended (or failed); return what happened."""
    return _stream_around(
        pipeline, lambda runtime: runtime.rollout(request, timeout_s=timeout_s),
        before=before, after=after, timeout_s=timeout_s,
    )  # fmt: skip


def run_actor_starts(
    pipeline: Pipeline, nodes: list[str], *, before: int, after: int, timeout_s: float = 240
) -> Outcome:
    """The peer of a rolling upgrade without edgeray in it: once the sink has ``before`` frames,
    start a bare Ray actor (no operator, no model) on each node in turn, each alive while the
    sink gets 50 frames (a rolling batch's verification), then stopped."""
    import ray

    bare = ray.remote(num_cpus=0.1)(BareActor)

    def starts(runtime: Runtime) -> None:
        sink = runtime.actors[f"{pipeline.name}/out#0"]
        for node in nodes:
            actor = bare.options(label_selector={"edge.node": node}).remote()
            ray.get(actor.ready.remote())
            _wait_progress(sink, ray_progress(sink) + 50)
            ray.kill(actor)

    return _stream_around(pipeline, starts, before=before, after=after, timeout_s=timeout_s)


class BareActor:
    """An actor process with nothing in it but Ray: what starting any replica costs at least."""

    def ready(self) -> int:
        return os.getpid()


def _stream_around(
    pipeline: Pipeline,
    action: Callable[[Runtime], dict[str, Any] | None],
    *,
    before: int,
    after: int,
    timeout_s: float,
) -> Outcome:
    """Stream; once the sink has ``before`` frames run ``action``; stop ``after`` frames after
    it ended (or failed); return what happened."""
    runtime = Runtime(pipeline)
    runtime.deploy()
    sink = runtime.actors[f"{pipeline.name}/out#0"]
    got: dict[str, Any] = {"record": None, "error": None, "window": (0, 0), "history": []}

    def control() -> None:
        try:
            _wait_progress(sink, before)
            began = time.time_ns()
            try:
                got["record"] = action(runtime)
            except Exception as err:  # reported in the outcome, the stream goes on
                got["error"] = err
            got["window"] = (began, time.time_ns())
            got["history"] = status(pipeline.name)[0]["rollouts"]
            _wait_progress(sink, ray_progress(sink) + after)
        finally:
            runtime.stop("rollout scenario over")

    thread = threading.Thread(target=control, daemon=True)
    thread.start()
    summary = runtime.run(timeout_s=timeout_s)
    thread.join()
    received = [x for s in runtime.stats if s["operator"] == "out" for x in s["snapshot"]]
    return Outcome(summary, runtime.stats, got["record"], got["error"], got["window"], received,
                   got["history"])  # fmt: skip


def ray_progress(actor) -> int:
    import ray

    return ray.get(actor.progress.remote())


def _wait_progress(actor, n: int, timeout_s: float = 120) -> None:
    """Poll the sink's processed count (a state query) every ``PROGRESS_POLL_S`` until it
    reaches ``n``."""
    deadline = time.monotonic() + timeout_s
    while ray_progress(actor) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the sink did not reach {n} frames within {timeout_s} s")
        time.sleep(PROGRESS_POLL_S)


# -- the machine's load from elsewhere ------------------------------------------------------------
class OtherLoad:
    """How many cores processes outside this benchmark kept busy, window by window.

    The stream's latency depends on the CPU left to it: on a shared machine a
    window in which other work ran says less. Every ``period_s`` a thread reads
    the machine's busy CPU time (``/proc/stat``) and that of this process and its
    descendants (the Ray nodes and workers it started); ``cores(t0, t1)`` is the
    rest, per second of the window (Linux only; ``None`` elsewhere).
    """

    def __init__(self, period_s: float = 0.25) -> None:
        self.samples: list[tuple[float, float]] = []  # (wall time, others' CPU s so far)
        self._own: dict[int, float] = {}
        self._others, self._last_busy = 0.0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period_s,), daemon=True)

    def __enter__(self) -> OtherLoad:
        if Path("/proc/stat").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def cores(self, t0: float, t1: float) -> float | None:
        inside = [(t, c) for t, c in self.samples if t0 <= t <= t1]
        if len(inside) < 2:
            return None
        (ta, ca), (tb, cb) = inside[0], inside[-1]
        return round((cb - ca) / (tb - ta), 2)

    def _run(self, period_s: float) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.wait(period_s):
            cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            busy = (sum(cpu[:8]) - cpu[3] - cpu[4]) / tick  # all but idle and iowait
            own = _descendants_cpu(os.getpid(), tick)
            grown = sum(c - self._own.get(pid, 0.0) for pid, c in own.items())
            if self._last_busy is not None:
                self._others += max(0.0, busy - self._last_busy - grown)
            self._own, self._last_busy = own, busy
            self.samples.append((time.time(), self._others))


def _descendants_cpu(root: int, tick: int) -> dict[int, float]:
    """CPU seconds (user + system) of ``root`` and every process below it, by pid."""
    parent, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # it ended while we looked
                continue
            parent[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier and p not in tree]
        tree.update(frontier)
    return {p: cpu[p] for p in tree if p in cpu}


# -- the benchmark --------------------------------------------------------------------------------
def _ratio(latencies: list[float], steady_p99: float) -> float | None:
    return round(float(np.percentile(latencies, 99) / steady_p99), 2) if latencies else None


def upgrade_latency(rolling: Outcome, others: OtherLoad) -> dict[str, Any]:
    """The stream's p99 over a rolling upgrade's window against the steady state before it
    (the second half of the time before it began), in the same run; the same ratio for the
    frames ingested while replicas started and while slots switched; the other processes'
    load in both windows."""
    began, ended = rolling.window_ns
    first = min(m.ingest_ts for m, _ in rolling.received)
    steady = rolling.latency_ms((first + began) // 2, began)
    during = rolling.latency_ms(began, ended)
    phases = (rolling.record or {}).get("phases", [])

    def in_phases(kind: str) -> list[float]:
        return [ms for name, _, t0, t1 in phases if name == kind
                for ms in rolling.latency_ms(int(t0 * 1e9), int(t1 * 1e9))]  # fmt: skip

    p99_steady, p99_during = np.percentile(steady, 99), np.percentile(during, 99)
    switching = in_phases("Switch")
    return {
        "p99_steady_ms": round(float(p99_steady), 1),
        "p99_during_upgrade_ms": round(float(p99_during), 1),
        "p99_ratio_during_upgrade": round(float(p99_during / p99_steady), 2),
        "frames_steady": len(steady),
        "frames_during_upgrade": len(during),
        "p99_ratio_while_starting": _ratio(in_phases("Start"), p99_steady),
        "p99_ratio_while_switching": _ratio(switching, p99_steady),
        "frames_while_switching": len(switching),
        "boot_held_replicas": "{}/{}".format(
            sum(1 for b in (rolling.record or {}).get("boot", []) if b["held_pids"]),
            len((rolling.record or {}).get("boot", [])),
        ),
        "other_load_cores_steady": others.cores((first + began) / 2e9, began / 1e9),
        "other_load_cores_during_upgrade": others.cores(began / 1e9, ended / 1e9),
    }


def vehicle_nodes(n: int) -> list[dict[str, str]]:
    return [{"edge.node": f"vehicle-{i + 1}", "edge.role": "vehicle"} for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 nodes, shorter streams")
    args = ap.parse_args()
    # Pinned here, not at import (the system tests import the scenario), before the cluster
    # starts so Ray's workers inherit them; ONNX Runtime has intra_op_threads=1.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    n_nodes = 3 if args.quick else 5
    rate = 60.0  # frames/s over all streams
    before, after = (90, 60) if args.quick else (300, 150)

    import ray

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "system"))
    from conftest import start_cluster

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = start_cluster(vehicle_nodes(n_nodes), cpus=2)
    results: dict[str, Any] = {"nodes": n_nodes, "rate_hz": rate, "quick": args.quick}
    try:
        registry = tempfile.mkdtemp(prefix="edgeray-bench-rollout-")
        register_detectors(registry)
        nodes = [f"vehicle-{i + 1}" for i in range(n_nodes)]

        def scenario(
            name: str, request: RolloutRequest, on: list[str] = nodes, before: int = before
        ) -> Outcome:
            pipeline = camera_pipeline(name, registry, on, rate_hz=rate)
            return run_rollout(pipeline, request, before=before, after=after)

        rolling_runs, latency = [], []
        with OtherLoad() as others:
            for i in range(1 if args.quick else 3):
                rolling_runs.append(scenario(f"bench-rolling-{i}", RolloutRequest(
                    operator="detector", model="det@2", strategy="rolling", min_frames=10),
                    before=2 * before))  # fmt: skip
                latency.append(upgrade_latency(rolling_runs[-1], others))
            pipeline = camera_pipeline("bench-bare-starts", registry, nodes, rate_hz=rate)
            bare = upgrade_latency(
                run_actor_starts(pipeline, nodes, before=2 * before, after=after), others
            )
        ratios = [r["p99_ratio_during_upgrade"] for r in latency]
        median = sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]
        blue_green = scenario("bench-blue-green", RolloutRequest(
            operator="detector", model="det@2", strategy="blue-green", window_s=1.0))  # fmt: skip
        canary = scenario("bench-canary", RolloutRequest(
            operator="detector", model="det@3", strategy="canary", share=0.34, duration_s=30,
            min_frames=20, min_quality_ratio=0.8, quality_field="scores"))  # fmt: skip
        runs = {f"rolling_{i}": r for i, r in enumerate(rolling_runs)}
        runs |= {"blue_green": blue_green, "canary": canary}
        upgrade_s = {}
        for n in range(1, n_nodes + 1):
            one = scenario(f"bench-scale-{n}", RolloutRequest(
                operator="detector", model="det@2", strategy="rolling", min_frames=0),
                on=nodes[:n])  # fmt: skip
            upgrade_s[n] = round((one.window_ns[1] - one.window_ns[0]) / 1e9, 2)
        one_batch = scenario("bench-scale-one-batch", RolloutRequest(
            operator="detector", model="det@2", strategy="rolling", min_frames=0,
            batch=n_nodes))  # fmt: skip
        results |= {
            "frames_lost": sum(r.frames_lost for r in runs.values()),
            "frames_lost_by_run": {k: r.frames_lost for k, r in runs.items()},
            "identity_holds": all(r.summary.identity_holds() for r in runs.values()),
            "outcomes": {k: (r.record or {}).get("state", repr(r.error)) for k, r in runs.items()},
            "canary_rolled_back": (canary.record or {}).get("state") == "rolled-back",
            "canary_reason": (canary.record or {}).get("reason"),
            "canary_dead_lettered": sum(canary.summary.dead_lettered.values()),
            **latency[median],
            "p99_ratio_runs": ratios,
            "p99_ratio_bare_actor_starts": bare["p99_ratio_during_upgrade"],
            "other_load_cores_bare_actor_starts": [
                bare["other_load_cores_steady"],
                bare["other_load_cores_during_upgrade"],
            ],
            "other_load_cores_runs": [
                [r["other_load_cores_steady"], r["other_load_cores_during_upgrade"]]
                for r in latency
            ],
            "upgrade_s_by_replicas": upgrade_s,
            "upgrade_s_per_replica_ratio": round((upgrade_s[n_nodes] / n_nodes) / upgrade_s[1], 2),
            "upgrade_s_all_in_one_batch": round(
                (one_batch.window_ns[1] - one_batch.window_ns[0]) / 1e9, 2
            ),
        }
    finally:
        ray.shutdown()
        cluster.shutdown()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("rollout.quick.json" if args.quick else "rollout.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
