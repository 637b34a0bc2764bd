"""Federated training of the sign classifier: how close to centralized, how robust, how polite?

The data: ``pipelines.sign_dataset`` (32x32 sign crops rendered by the project's
simulator plus the 215 real GTSRB images), its train split spread over 5
clients by Dirichlet(0.5) over classes (non-IID), each client keeping 20% of its
share as held-out data; the central test set is the dataset's test split
(simulator and real). The model: the numpy MLP (``models.federated.MLPTrainer``).
Every arm runs the same number of epochs of compute: R rounds x 1 local epoch
for the federated arms, R epochs over the union of the clients' data for the
centralized peer. The federated arms run ``cluster.federated.Coordinator`` over
an in-process pool (the fleet's aggregation and round code, without Ray's
start-up cost; ``tests/system/test_federated.py`` runs it on a Ray fleet).

Figures (accuracies on the central test set, fractions 0-1, each the mean over
an arm's last 5 rounds, since one round's accuracy on a test set of a few
hundred crops moves by a few points):

- ``central_acc``, ``fedavg_acc``, ``fedprox_acc`` after R rounds / epochs, and
  ``fedavg_gap_pts`` = central - FedAvg in percentage points (target <= 3);
- ``poisoned_fedavg_acc``, ``poisoned_median_acc``, ``poisoned_trimmed_acc``: 1 of
  the 5 clients (``client-0``) sends its update sign-flipped and scaled x4 (target:
  median and trimmed within 5 points of clean FedAvg; FedAvg degrades). Median and
  trimmed mean run as configured for non-IID clients: nearest-neighbour mixing first
  (``Median(pre="nnm")``, ``models.federated.robust``). ``honest_fedavg_acc`` is
  FedAvg over the 4 honest clients alone: the most a rule that ignores the attacker can
  reach, since the attacker's data is lost with it. ``clean_median_acc`` and
  ``clean_trimmed_acc`` (no attacker) give the robust rules' own cost;
- the other ways to make the robust rules hold, each with the same attacker:
  ``poisoned_median_plain_acc`` and ``poisoned_trimmed_plain_acc`` (no pre-aggregation),
  ``poisoned_median_bucketing_acc`` (buckets of 2), ``poisoned_median_norm_bound_acc``
  (updates clipped to the median norm), ``poisoned_median_momentum_acc`` (server
  momentum 0.5), ``poisoned_krum_acc`` and ``poisoned_multikrum_acc`` (Multi-Krum, mean
  of the 3 best); and on a near-IID split (Dirichlet(100)) ``iid_fedavg_acc``,
  ``iid_poisoned_median_acc``, ``iid_poisoned_trimmed_acc``;
- ``live_p99_ratio_during_round``: on a local Ray fleet (a head, ``vehicle-1`` and
  ``vehicle-2``, all on this machine's cores), a live pipeline on ``vehicle-1``
  (camera frames at 10 Hz -> YOLOX-nano on ONNX Runtime, 1 thread -> sink) runs beside
  ``RayTrainerPool`` trainers on ``vehicle-1`` and ``vehicle-2`` with the fleet's bounded
  CPU share (``CpuShare()``: 1 thread per pool, every thread under SCHED_IDLE; the
  coordinator thread takes the same share). Windows without rounds and with FedAvg
  rounds back to back alternate (``ALTERNATIONS``, the trainers started before the
  first, so both see the same processes and the same drift in the machine's background
  load), each condition ``frames`` frames after a warm-up; the ratio is the pipeline's
  end-to-end p99 during the rounds over its p99 without them (target <= 1.5).
  ``live_rounds_during_round`` and ``live_acc_after_during_round`` (central test accuracy
  of the global model after them) show the rounds really trained;
  ``live_trainer_policy_during_round`` says which bound applied (``idle``: SCHED_IDLE,
  ``nice``: the niceness fallback). ``live_p99_ratio_unbounded`` is the same with
  trainers and coordinator at full priority and 2 threads, for contrast. Absolute p99s
  are reported beside the 100 ms budget; the arm is skipped (``live_model`` null)
  without the detector's data.

Also the PNGs of accuracy vs round: the three clean arms (``federated.png``) and the
arms with the attacker (``federated_robust.png``). The accuracy arms are
deterministic (seeded) and independent, so they run two at a time in worker processes;
the live arm runs alone after them.

Run: ``python -m bench.federated`` (``--quick``: smaller data, fewer rounds;
``--live-only``: the live arm alone, printed, no file written: for iterating on the CPU share).
The last line printed is one JSON object; a full run writes
``bench/results/federated.json`` and the PNGs, a quick one ``federated.quick.json``
and ``federated.quick.png`` / ``federated_robust.quick.png``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # pinned in every arm, inherited by the trainer processes

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench.rollout import ArrivalSink, ray_progress  # noqa: E402
from cluster.federated import (  # noqa: E402
    Coordinator,
    CpuShare,
    LocalTrainerPool,
    RayTrainerPool,
    RoundConfig,
    TrainerSpec,
    bound_thread,
)
from models.datasets import read_image_dataset  # noqa: E402
from models.federated import (  # noqa: E402
    FedAvg,
    MLPTrainer,
    PoisonedTrainer,
    dirichlet_partition,
    make_strategy,
    train_test_split,
    write_partition,
)
from models.federated.numpy_mlp import features, score  # noqa: E402
from operators import Message, Resources, Source  # noqa: E402
from operators.detection import ObjectDetector  # noqa: E402
from pipelines import Pipeline  # noqa: E402
from pipelines._runtime import Runtime  # noqa: E402

cv2.setNumThreads(1)
RESULTS = pathlib.Path(__file__).parent / "results"
CLIENTS = 5
ALPHA = 0.5
CLASSES = 43
#: Dirichlet alpha of the near-IID split the poisoning arms are repeated on.
IID_ALPHA = 100.0
#: Headline accuracies are the mean of the last rounds' (one round is noisy on a small test set).
TAIL = 5


def load_data(per_class: int, test_per_class: int, cache: pathlib.Path):
    """Train and central-test ``(X, y)`` of the sign dataset (written once into ``cache``)."""
    from pipelines.sign_dataset import write_sign_dataset

    path = cache / f"signs-{per_class}-{test_per_class}" / "signs.parquet"
    if not path.is_file():
        write_sign_dataset(path.parent, per_class=per_class, test_per_class=test_per_class)
    return read_image_dataset(path, split="train"), read_image_dataset(path, split="test")


def client_shards(X, y, *, alpha: float = ALPHA, seed: int = 0):
    """Per client ``(train, held-out)``, from a Dirichlet(``alpha``) split over classes."""
    shards = []
    for i, idx in enumerate(dirichlet_partition(y, num_clients=CLIENTS, alpha=alpha, seed=seed)):
        tr, te = train_test_split(len(idx), test_fraction=0.2, seed=i)
        shards.append(((X[idx[tr]], y[idx[tr]]), (X[idx[te]], y[idx[te]])))
    return shards


def final(accuracies: list[float]) -> float:
    """An arm's headline accuracy: the mean over its last ``TAIL`` rounds."""
    return float(np.mean(accuracies[-TAIL:]))


@dataclass(frozen=True)
class Arm:
    """One accuracy arm: a strategy (or ``"central"``), its options, the split, the attacker."""

    strategy: str
    options: dict[str, Any] = field(default_factory=dict)
    alpha: float = ALPHA
    poisoned: bool = False
    honest_only: bool = False  # leave the attacker's client out altogether


#: How the robust strategies are configured for non-IID clients (``models.federated.robust``).
ROBUST = {"pre": "nnm", "byzantine": 1}
ARMS = {
    "central": Arm("central"),
    "fedavg": Arm("fedavg"),
    "fedprox": Arm("fedprox", {"proximal_mu": 0.01}),
    "poisoned_fedavg": Arm("fedavg", poisoned=True),
    "poisoned_median": Arm("median", ROBUST, poisoned=True),
    "poisoned_trimmed": Arm("trimmed", {"trim": 0.2, **ROBUST}, poisoned=True),
    "honest_fedavg": Arm("fedavg", honest_only=True),
    "clean_median": Arm("median", ROBUST),
    "clean_trimmed": Arm("trimmed", {"trim": 0.2, **ROBUST}),
    "poisoned_median_plain": Arm("median", poisoned=True),
    "poisoned_trimmed_plain": Arm("trimmed", {"trim": 0.2}, poisoned=True),
    "poisoned_median_bucketing": Arm("median", {"pre": "bucketing"}, poisoned=True),
    "poisoned_median_norm_bound": Arm("median", {"pre": "norm-bound"}, poisoned=True),
    "poisoned_median_momentum": Arm("median", {"server_momentum": 0.5}, poisoned=True),
    "poisoned_krum": Arm("krum", poisoned=True),
    "poisoned_multikrum": Arm("krum", {"select": 3}, poisoned=True),
    "iid_fedavg": Arm("fedavg", alpha=IID_ALPHA),
    "iid_poisoned_median": Arm("median", ROBUST, alpha=IID_ALPHA, poisoned=True),
    "iid_poisoned_trimmed": Arm("trimmed", {"trim": 0.2, **ROBUST}, alpha=IID_ALPHA, poisoned=True),
}


#: The arms the accuracy-vs-round plot shows (their figures lead the JSON).
CLEAN = ("central", "fedavg", "fedprox")
#: The arms with the attacker whose accuracy per round the JSON keeps (and the robust plot shows).
PLOTTED = (
    "poisoned_fedavg", "honest_fedavg", "poisoned_median", "poisoned_median_plain",
    "poisoned_multikrum",
)  # fmt: skip


def federated_arm(arm: Arm, shards, test, cfg: RoundConfig, hidden) -> list[float]:
    """Central test accuracy per round of ``arm``'s strategy over the clients ``shards``."""
    trainers = {}
    for i, (train, held_out) in enumerate(shards):
        if arm.honest_only and i == 0:
            continue
        t = MLPTrainer(train, held_out, num_classes=CLASSES, hidden=hidden)
        trainers[f"client-{i}"] = PoisonedTrainer(t, factor=-4.0) if arm.poisoned and i == 0 else t
    fx = features(test[0])
    history = Coordinator(
        LocalTrainerPool(trainers),
        make_strategy(arm.strategy, **arm.options),
        initial_weights=MLPTrainer(num_classes=CLASSES, hidden=hidden).get_weights(),
        config=replace(cfg, min_clients=len(trainers)),
        central_eval=lambda w: score(w, fx, test[1]),
    ).run()
    return [m.central_accuracy for m in history]


def central_arm(shards, test, cfg: RoundConfig, hidden) -> list[float]:
    """The same model on the union of the clients' training data, one epoch per round."""
    X = np.concatenate([s[0][0] for s in shards])
    y = np.concatenate([s[0][1] for s in shards])
    trainer = MLPTrainer((X, y), test, num_classes=CLASSES, hidden=hidden)
    weights, accs = trainer.get_weights(), []
    for r in range(1, cfg.rounds + 1):
        weights = trainer.fit(weights, cfg.client_config(r, {})).weights
        accs.append(trainer.evaluate(weights, {}).accuracy)
    return accs


_DATA: dict[str, Any] = {}


def _load_worker(per_class: int, test_per_class: int, cache: str) -> None:
    """A worker's copy of the data set (read once per worker process)."""
    _DATA["train"], _DATA["test"] = load_data(per_class, test_per_class, pathlib.Path(cache))


def run_arm(arm: Arm, cfg: RoundConfig, hidden) -> list[float]:
    """Accuracy per round of one arm, in a worker that holds the data set."""
    shards = client_shards(*_DATA["train"], alpha=arm.alpha)
    if arm.strategy == "central":
        return central_arm(shards, _DATA["test"], cfg, hidden)
    return federated_arm(arm, shards, _DATA["test"], cfg, hidden)


def accuracy_arms(data_args: tuple, cfg: RoundConfig, hidden) -> dict[str, list[float]]:
    """Every arm of ``ARMS``, two at a time in worker processes (each has 1 BLAS thread)."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx, initializer=_load_worker,
                             initargs=data_args) as pool:  # fmt: skip
        futures = {name: pool.submit(run_arm, arm, cfg, hidden) for name, arm in ARMS.items()}
        return {name: f.result() for name, f in futures.items()}


# -- a live pipeline beside training rounds, on a local Ray fleet --------------------------------
#: The node the live pipeline runs on; the trainers run there and on a second vehicle.
LIVE_NODE, TRAINER_NODES = "vehicle-1", ("vehicle-1", "vehicle-2")


class Frames(Source):
    """One 640x480 camera frame per poll (the live pipeline's source), without end."""

    outputs = ("frames",)
    resources = Resources(num_cpus=0.1)

    def __init__(self) -> None:
        self.n = 0
        self.frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)

    def poll(self, now: int):
        self.n += 1
        return [("frames", Message("cam-0", self.n - 1, now, {"image": self.frame}))]

    def snapshot(self) -> int:
        return self.n

    def restore(self, state: int) -> None:
        self.n = state


def live_pipeline(model: str) -> Pipeline:
    """Camera frames at 10 Hz -> YOLOX-nano (ONNX Runtime, 1 thread) -> a sink, on LIVE_NODE."""
    on = {"edge.node": LIVE_NODE}
    p = Pipeline("federated-live")
    p.source("cams", Frames(), rate_hz=10.0, placement=on)
    p.operator("detector", ObjectDetector(model=model, carry=(), intra_op_threads=1), placement=on)
    p.sink("out", ArrivalSink(), placement=on)
    p.connect("cams", "detector")
    p.connect("detector", "out")
    return p


def wait_progress(sink, n: int, timeout_s: float = 300) -> None:
    """Poll the live sink's processed count every 20 ms until it reaches ``n``."""
    deadline = time.monotonic() + timeout_s
    while ray_progress(sink) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the live sink did not reach {n} frames within {timeout_s} s")
        time.sleep(0.02)


class Rounds(threading.Thread):
    """Federated rounds back to back on a thread, while switched on (``resume`` / ``pause``).

    The thread takes the trainers' CPU share (``bound_thread``: on Linux a thread's
    scheduling class is its own): on a fleet the coordinator runs off the live node;
    here it shares the live pipeline's cores.
    """

    def __init__(self, coordinator: Coordinator, share: CpuShare) -> None:
        super().__init__(daemon=True)
        self.coordinator, self.share = coordinator, share
        self.completed = 0
        self.error: BaseException | None = None
        self._wanted = self._busy = self._stopping = False
        self._cond = threading.Condition()

    def run(self) -> None:
        bound_thread(self.share)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted or self._stopping)
                if self._stopping:
                    return
                self._busy = True
            try:
                metrics, self.coordinator.weights = self.coordinator.run_round(self.completed + 1)
            except BaseException as err:  # handed to whoever waits on this thread
                self.error = err
            with self._cond:
                self._busy = False
                if self.error is None:
                    self.coordinator.history.append(metrics)
                    self.completed += 1
                self._cond.notify_all()
            if self.error is not None:
                return

    def resume(self, timeout_s: float = 120) -> None:
        """Rounds on; returns once one round has completed (the trainers are hot)."""
        with self._cond:
            target, self._wanted = self.completed + 1, True
            self._cond.notify_all()
            self._wait(lambda: self.completed >= target, timeout_s)

    def pause(self, timeout_s: float = 120) -> None:
        """Rounds off; returns once the round in progress has completed."""
        with self._cond:
            self._wanted = False
            self._wait(lambda: not self._busy, timeout_s)

    def stop(self) -> None:
        with self._cond:
            self._stopping, self._wanted = True, False
            self._cond.notify_all()
        self.join()

    def _wait(self, done, timeout_s: float) -> None:
        if not self._cond.wait_for(lambda: done() or self.error is not None, timeout_s):
            raise TimeoutError(f"federated rounds did not get there within {timeout_s} s")
        if self.error is not None:
            raise RuntimeError("a federated round failed") from self.error


#: The trainers' CPU share in each window beside rounds: the fleet's bounded default, and full
#: priority with 2 threads for contrast.
SHARES = {"during_round": CpuShare(), "unbounded": CpuShare(threads=2, idle=False, niceness=0)}
#: Frames the live pipeline processes before the first window (ONNX Runtime and Ray warm up).
WARM_FRAMES = 30
#: The alone and during-round windows alternate this many times (a drift in the machine's
#: background load then falls on both alike).
ALTERNATIONS = 2


def live_arm(shards, test, hidden, *, frames: int, contrast_frames: int) -> dict:
    """p99 end-to-end latency of the live pipeline alone and beside federated rounds whose
    trainers have the fleet's bounded CPU share (``frames`` each, in alternating windows,
    the trainers started before the first), then beside trainers at full priority
    (``contrast_frames``); with the rounds each condition saw and the central test accuracy
    they reached, so it shows they really trained."""
    import ray

    from pipelines.data import data_path

    try:
        model = str(data_path("detector-yolox-nano", "yolox_nano.onnx"))
    except FileNotFoundError:
        return {"live_model": None}
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "system"))
    from conftest import start_cluster

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    data = pathlib.Path(tempfile.mkdtemp(prefix="edgeray-bench-federated-"))
    for node, (train, held_out) in zip(TRAINER_NODES, shards[: len(TRAINER_NODES)], strict=True):
        write_partition(data / node, train, held_out)
    spec = TrainerSpec(data_root=str(data), num_classes=CLASSES, hidden=hidden)
    cfg = RoundConfig(rounds=10**6, min_clients=len(TRAINER_NODES), lr=0.1, batch_size=16)
    fx = features(test[0])
    cluster = start_cluster([{"edge.node": n, "edge.role": "vehicle"} for n in TRAINER_NODES])
    windows: dict[str, list[tuple[int, int]]] = {label: [] for label in ("alone", *SHARES)}
    trained: dict[str, dict[str, Any]] = {}
    try:
        runtime = Runtime(live_pipeline(model))
        runtime.deploy()
        sink = runtime.actors["federated-live/out#0"]

        def window(label: str, n: int) -> None:
            began = time.time_ns()
            wait_progress(sink, ray_progress(sink) + n)
            windows[label].append((began, time.time_ns()))

        def beside_rounds(label: str, n: int, alone: int = 0) -> None:
            """``n`` frames beside rounds (and ``alone`` without), alternating."""
            share = SHARES[label]
            pool = RayTrainerPool(spec, TRAINER_NODES, share=share)
            coordinator = Coordinator(
                pool, FedAvg(), initial_weights=spec.model().get_weights(), config=cfg
            )
            rounds = Rounds(coordinator, share)
            rounds.start()
            parts, done = (ALTERNATIONS if alone else 1), 0
            try:
                for _ in range(parts):
                    if alone:
                        window("alone", alone // parts)
                    rounds.resume()
                    before = rounds.completed
                    window(label, n // parts)
                    done += rounds.completed - before
                    rounds.pause()
            finally:
                rounds.stop()
                pool.shutdown()
            trained[label] = {
                "rounds": done,
                "acc": score(coordinator.weights, fx, test[1]).accuracy,
                "policy": sorted({p["policy"] for p in pool.placement.values()}),
            }

        def control() -> None:
            try:
                wait_progress(sink, WARM_FRAMES)
                beside_rounds("during_round", frames, alone=frames)
                beside_rounds("unbounded", contrast_frames)
            finally:
                runtime.stop("bench.federated live arm over")

        thread = threading.Thread(target=control, daemon=True)
        thread.start()
        runtime.run(timeout_s=900)
        thread.join()
        received = [x for s in runtime.stats if s["operator"] == "out" for x in s["snapshot"]]
    finally:
        ray.shutdown()
        cluster.shutdown()

    def latencies(label: str) -> list[float]:
        return [
            (t - m.ingest_ts) / 1e6
            for m, t in received
            if any(lo <= m.ingest_ts < hi for lo, hi in windows[label])
        ]

    alone = float(np.percentile(latencies("alone"), 99))
    figures: dict[str, Any] = {
        "live_model": "yolox-nano",
        "live_p99_ms_alone": alone,
        "live_frames_alone": len(latencies("alone")),
    }
    for label in SHARES:
        p99 = float(np.percentile(latencies(label), 99))
        figures[f"live_p99_ms_{label}"] = p99
        figures[f"live_p99_ratio_{label}"] = p99 / alone
        figures[f"live_frames_{label}"] = len(latencies(label))
        figures[f"live_rounds_{label}"] = trained[label]["rounds"]
        figures[f"live_acc_after_{label}"] = trained[label]["acc"]
        figures[f"live_trainer_policy_{label}"] = trained[label]["policy"]
    return figures


def plot(curves: dict[str, list[float]], path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, accs in curves.items():
        ax.plot(range(1, len(accs) + 1), accs, marker="o", markersize=3, label=label)
    ax.set_xlabel("round (= epochs of compute)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer rounds")
    parser.add_argument(
        "--live-only", action="store_true", help="only the live arm; prints it, writes no file"
    )
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "edgeray-bench"),
                        help="where the generated sign dataset is kept between runs")  # fmt: skip
    args = parser.parse_args(argv)
    started = time.perf_counter()
    per_class, test_per_class, rounds, hidden, frames, contrast_frames = (
        (30, 8, 40, (64,), 150, 100) if args.quick else (100, 25, 60, (128,), 500, 200)
    )
    train, test = load_data(per_class, test_per_class, pathlib.Path(args.cache))  # cached
    shards = client_shards(*train)
    if args.live_only:
        live = live_arm(shards, test, hidden, frames=frames, contrast_frames=contrast_frames)
        live["wall_s"] = time.perf_counter() - started
        print(json.dumps(live))
        return live
    cfg = RoundConfig(rounds=rounds, min_clients=CLIENTS, epochs=1, lr=0.1, batch_size=16)
    curves = accuracy_arms((per_class, test_per_class, args.cache), cfg, hidden)
    acc = {name: final(accs) for name, accs in curves.items()}
    central, fedavg, fedprox = curves["central"], curves["fedavg"], curves["fedprox"]
    live = live_arm(shards, test, hidden, frames=frames, contrast_frames=contrast_frames)

    suffix = ".quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    png = RESULTS / f"federated{suffix}.png"
    plot(
        {"centralized": central, "FedAvg": fedavg, "FedProx (mu=0.01)": fedprox},
        png,
        f"sign crops, {CLIENTS} clients, Dirichlet({ALPHA}), MLP {hidden}",
    )
    robust_png = RESULTS / f"federated_robust{suffix}.png"
    plot(
        {
            "FedAvg, no attacker": fedavg,
            "FedAvg, 4 honest clients only": curves["honest_fedavg"],
            "median after NNM, 1 attacker": curves["poisoned_median"],
            "median (plain), 1 attacker": curves["poisoned_median_plain"],
            "Multi-Krum (3), 1 attacker": curves["poisoned_multikrum"],
            "FedAvg, 1 attacker": curves["poisoned_fedavg"],
        },
        robust_png,
        f"1 of {CLIENTS} clients sign-flipped x4, Dirichlet({ALPHA})",
    )
    figures = {
        "central_acc": acc["central"],
        "fedavg_acc": acc["fedavg"],
        "fedprox_acc": acc["fedprox"],
        "fedavg_gap_pts": 100 * (acc["central"] - acc["fedavg"]),
        **{f"{name}_acc": acc[name] for name in ARMS if name not in CLEAN},
        "poisoned_median_gap_pts": 100 * (acc["fedavg"] - acc["poisoned_median"]),
        "poisoned_trimmed_gap_pts": 100 * (acc["fedavg"] - acc["poisoned_trimmed"]),
        "robust_pre_aggregation": ROBUST,
        **live,
        "live_p99_budget_ms": 100.0,
        "central_acc_per_round": central,
        "fedavg_acc_per_round": fedavg,
        "fedprox_acc_per_round": fedprox,
        **{f"{name}_acc_per_round": curves[name] for name in PLOTTED},
        "rounds": rounds,
        "local_epochs": 1,
        "clients": CLIENTS,
        "dirichlet_alpha": ALPHA,
        "train_samples": int(sum(len(s[0][1]) for s in shards)),
        "client_samples": [len(s[0][1]) for s in shards],
        "test_samples": len(test[1]),
        "plot": str(png.relative_to(RESULTS.parent.parent)),
        "robust_plot": str(robust_png.relative_to(RESULTS.parent.parent)),
        "wall_s": time.perf_counter() - started,
    }
    (RESULTS / f"federated{suffix}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
