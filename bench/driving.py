"""How well does the driving pipeline see, decide and keep up? Measured against ground truth.

- ``map50``: the project's own detector (``models/artifacts/sim-detector``) on held-out
  simulator scenarios written as a KITTI folder, scored by ``pipelines.eval_detect``
  (IoU 0.5, DontCare ignored), run as the driving pipeline runs it (``sim-detector-hw``
  at ``detect_input_hw``), with the 416x416 square input beside it (``map50_square_416``);
  YOLOX-nano on the real KITTI sample beside it (``map50_yolox_kitti``).
- ``lane_offset_err_median_m``: ``LaneDetector(geometry=True)`` on every camera frame of
  the held-out scenarios (open loop: the simulator keeps its lane), |detected lateral
  offset - true offset| over frames with a lane estimate of confidence >= 0.8 (what
  ``DecisionMaker`` steers on), and the share of frames that had one.
- ``sign_acc_sim`` / ``sign_acc_real``: the sign classifier on held-out simulator crops and
  on the real GTSRB images of the held-out split (``pipelines.eval_signs``).
- Closed loop, every held-out scenario through ``autonomous_driving.build`` with the local
  runner (event time, lossless): ``aeb_recall`` over the emergency drives (a scripted
  emergency - lead emergency brake, cut-in, pedestrian crossing - in which a road user
  came into the lane ahead closer than ``EMERGENCY_GAP_M``, by the simulator's truth),
  ``ttc_at_braking_s`` of each, ``collisions``, and ``false_brakes`` (AEB in the other
  scenarios). These drives leave lane keeping to the simulator (``perception=False``:
  AEB acts on the lidar); ``lane_keeping_max_lateral_m`` reports the drives that steer
  on detected lanes, with the whole perception stack running (``PERCEPTION_DRIVES``, seed 0
  only, as the full pipeline on 2 cores takes ~25 s per drive), and
  ``stopped_at_stop_sign`` whether the stop-sign drives came to a halt on the signs the
  pipeline recognised, ``speed_after_limits_mps`` the speed the speed-limit drives ended at.
- Real time on the embedded local fleet (``cluster/fleets/local.toml``, 2 cores), the
  whole perception stack on a 640x360 camera at 30 Hz, ``car_following`` held out:

  * the vehicle's compute (``latency_*``, ``perception_*``, ``max_fps``): the drive's
    camera, lidar and ego streams recorded once (``sim_cpu_ms_per_frame``: what the
    simulator spends per camera frame rendering them, in this process), then replayed
    by ``RecordedSensors`` into ``autonomous_driving.build(sensors=...)`` (open loop: the
    commands are recorded, not applied), so the simulator's rendering - the sensor here,
    not the vehicle's work - does not share the 2 cores with the vehicle's operators;
  * the closed loop (``closed_loop_*``): the same drive with the simulator rendering on
    the vehicle node and the commands steering it.

  Each: ``latency_p50_ms`` / ``latency_p99_ms`` from a sensor's ``ingest_ts`` to the
  control command leaving the controller (each ego sample starts a decision), paced at
  30 Hz; ``perception_p50_ms`` / ``perception_p99_ms`` (camera frame -> fused objects, which
  wait for the lidar scan of their instant); ``camera_hz`` the camera rate achieved and
  ``perception_fps`` the frames perception took (the rest dropped as ``latest-only``,
  counted); ``cpu_ms_per_frame``: each operator's replica process, CPU ms per camera frame
  (``/proc``), with Ray's own processes, this driver and other users of the machine
  beside it (``cpu_ms_per_frame_not_operators``) and the machine's total; ``max_fps``:
  camera frames per second through perception when the sensors are not paced
  (``realtime=False``: lossless, paced by back-pressure), and ``streams_at_30hz`` =
  floor(max_fps / 30), how many 30 Hz cameras one vehicle node's pipeline sustains, with
  the CPU per frame of that run and how many of the 2 cores were busy (``*_busy_cores``).

Run: ``python -m bench.driving`` (``--quick``: fewer seeds and a shorter fleet run). The last
line printed is one JSON object; a full run writes it to ``bench/results/driving.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local instance

import argparse
import json
import math
import pathlib
import tempfile
import time
from typing import Any

import numpy as np

from operators import Context, Message, Resources, Sink, Source
from operators.detection import SIM_DETECTOR_HW, input_for
from operators.driving import SCENARIOS, DrivingSimulator, PinholeCamera
from operators.lanes import LaneDetector
from operators.recording import read_recording, write_recording
from pipelines.autonomous_driving import VEHICLE, build
from pipelines.testing import run_local

RESULTS = pathlib.Path(__file__).parent / "results"
EMERGENCIES = ("lead_emergency_brake", "cut_in", "pedestrian_crossing")
EMERGENCY_GAP_M = 30.0
MIN_LANE_CONFIDENCE = 0.8  # what DecisionMaker steers on
#: The drives with the whole perception stack deciding: lanes steer, signs set limits / stops.
PERCEPTION_DRIVES = ("lane_curve", "car_following", "stop_sign", "speed_limit_change")
#: Twenty-odd actors start on 2 cores: give them longer than the runtime's default 30 s.
PLACEMENT_S = 120.0
#: The simulator's sensor streams, as recorded and replayed.
SENSOR_PORTS = ("ego", "lidar", "camera")
#: What ``--only`` may pick, in the order a full run measures them.
STAGES = ("detection", "lanes", "signs", "closed-loop", "fleet")
#: A tiny camera at 1 Hz for the drives that judge braking only (AEB acts on the lidar).
FAST_CAMERA = {"camera": PinholeCamera(width=64, height=36, focal=48.0), "camera_hz": 1.0}


# -- perception accuracy ---------------------------------------------------------------------
def detection_map(seeds: tuple[int, ...], tmp: pathlib.Path) -> dict[str, Any]:
    from dataclasses import replace

    from pipelines.detector_dataset import sim_frames, write_kitti
    from pipelines.eval_detect import evaluate_detections, sim_detector, yolox_nano

    folder = write_kitti(tmp / "held_out_kitti", sim_frames(seeds=seeds, held_out=True))
    # as the pipeline runs it (SIM_DETECTOR_HW at the camera's aspect ratio), and square
    as_run = replace(
        sim_detector(),
        model=str(SIM_DETECTOR_HW),
        input_size=input_for((PinholeCamera().height, PinholeCamera().width)),
    )
    own = evaluate_detections(folder, detector=as_run).summary()
    square = evaluate_detections(folder).summary()
    out = {"map50": own["map50"], "ap50": own["ap50"], "detect_precision": own["precision"],
           "detect_recall": own["recall"], "detect_frames": own["images"],
           "detect_input_hw": list(as_run.input_size),
           "map50_square_416": square["map50"]}  # fmt: skip
    try:
        from pipelines.data import data_path

        real = evaluate_detections(data_path("kitti-sample"), detector=yolox_nano()).summary()
        out["map50_yolox_kitti"] = real["map50"]
    except FileNotFoundError:  # the shared data is absent
        out["map50_yolox_kitti"] = None
    return out


def lane_offset_error(seeds: tuple[int, ...], camera_hz: float) -> dict[str, Any]:
    errors, frames = [], 0
    for name in SCENARIOS:
        for seed in seeds:
            sim = DrivingSimulator(name, seed=seed, held_out=True, poll_hz=camera_hz,
                                   camera_hz=camera_hz, lidar_hz=1e-3, ego_hz=1e-3)  # fmt: skip
            sim.setup(Context(operator="sim"))
            lanes = LaneDetector(geometry=True)
            while (out := sim.poll(0)) is not None:
                for port, message in out:
                    if port != "camera":
                        continue
                    frames += 1
                    [(_, lane)] = lanes.process("frames", message)
                    p = lane.payload
                    if p["confidence"] >= MIN_LANE_CONFIDENCE and math.isfinite(p["offset_m"]):
                        errors.append(abs(p["offset_m"] - message.truth["ego_offset"]))
    return {
        "lane_offset_err_median_m": round(float(np.median(errors)), 4),
        "lane_offset_err_p90_m": round(float(np.percentile(errors, 90)), 4),
        "lane_frames_with_estimate": round(len(errors) / frames, 4),
    }


def sign_accuracy() -> dict[str, Any]:
    from operators.signs import SignRecognizer
    from pipelines.data import data_path
    from pipelines.eval_signs import evaluate_scenarios
    from pipelines.sign_dataset import gtsrb_split, read_sign_folder

    sim = evaluate_scenarios()
    real = read_sign_folder(data_path("signs-gtsrb"))
    test = np.array(gtsrb_split(real.files, real.class_ids)) == "test"  # never trained on
    recognizer = SignRecognizer()
    recognizer.setup(Context(operator="bench-signs"))
    predicted = recognizer.classify(real.sign_crops()[test]).argmax(axis=1)
    return {
        "sign_acc_sim": round(sim.accuracy, 4),
        "sign_sim_crops": len(sim.truth),
        "sign_acc_real": round(float((predicted == real.class_ids[test]).mean()), 4),
        "sign_real_images": int(test.sum()),
    }


# -- closed loop -------------------------------------------------------------------------------
def drive(name: str, seed: int, tmp: pathlib.Path, *, perception: bool) -> dict[str, Any]:
    out = tmp / f"{name}-{seed}-{'p' if perception else 'l'}"
    options = {"camera_hz": 10.0, "video_hz": 1.0} if perception else FAST_CAMERA
    run = run_local(build(name, seed=seed, held_out=True, out_dir=out, realtime=False,
                          perception=perception, **options))  # fmt: skip
    ego = [m for _, m in read_recording(out / "ego_log")]
    commands = [m for _, m in read_recording(out / "commands")]
    aeb = [m for m in commands if m.payload["aeb"]]
    return {
        "scenario": name,
        "seed": seed,
        "aeb": bool(aeb),
        "ttc_at_braking_s": round(aeb[0].payload["ttc_s"], 3) if aeb else None,
        "min_gap_m": round(min(m.truth["gap"] for m in ego), 2),
        "collision": any(m.truth["collision"] for m in ego),
        "max_lateral_m": round(max(abs(m.truth["lateral_offset"]) for m in ego), 3),
        "min_speed_mps": round(min(m.truth["speed"] for m in ego), 2),
        "end_speed_mps": round(ego[-1].truth["speed"], 2),
        "dead_lettered": len(run.dead_letters),
    }


def closed_loop(seeds: tuple[int, ...], lane_drives: tuple[str, ...], tmp) -> dict[str, Any]:
    drives = [drive(name, seed, tmp, perception=False) for name in SCENARIOS for seed in seeds]
    emergencies = [
        d for d in drives if d["scenario"] in EMERGENCIES and d["min_gap_m"] < EMERGENCY_GAP_M
    ]
    others = [d for d in drives if d["scenario"] not in EMERGENCIES]
    steered = [drive(name, 0, tmp, perception=True) for name in lane_drives]  # seed 0: time
    return {
        "aeb_recall": round(sum(d["aeb"] for d in emergencies) / len(emergencies), 4),
        "emergency_drives": len(emergencies),
        "ttc_at_braking_s": [d["ttc_at_braking_s"] for d in emergencies],
        "false_brakes": sum(d["aeb"] for d in others),
        "non_emergency_drives": len(others),
        "collisions": sum(d["collision"] for d in drives + steered),
        "lane_keeping_max_lateral_m": {
            f"{d['scenario']}-{d['seed']}": d["max_lateral_m"] for d in steered
        },
        "stopped_at_stop_sign": [
            d["min_speed_mps"] < 0.5 for d in steered if d["scenario"] == "stop_sign"
        ],
        "speed_after_limits_mps": [
            d["end_speed_mps"] for d in steered if d["scenario"] == "speed_limit_change"
        ],
        "drives": drives + steered,
    }


# -- real time on the fleet ---------------------------------------------------------------------
class LatencyLog(Sink):
    """Appends ``now - ingest_ts`` (ms) of each message to a ``.npy`` file on flush."""

    inputs = ("in",)
    resources = Resources(num_cpus=0.01)  # fits beside the vehicle's 0.95 CPU of operators

    def __init__(self, path: str) -> None:
        self.path = path
        self.samples: list[float] = []

    def process(self, port: str, message: Message) -> tuple:
        self.samples.append((time.time_ns() - message.ingest_ts) / 1e6)
        return ()

    def flush(self) -> None:
        np.save(self.path, np.asarray(self.samples, np.float64))

    def teardown(self) -> None:
        self.flush()


def _tap(p, name: str, src: str, path: pathlib.Path) -> None:
    p.sink(name, LatencyLog(str(path)), placement=VEHICLE)
    p.connect(src, f"{name}.in", policy="latest-only", window=4)


def _processes() -> dict[int, tuple[str, float]]:
    """Every process now: pid -> (what it is, CPU seconds used so far), from ``/proc``.

    What it is: ``driver`` (this process), a Ray process by its name (``raylet``,
    ``gcs_server``, a Ray worker's title or a Python script's file name), or ``other``
    for anything without ``ray`` in its command line (other users of the machine).
    """
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            comm, fields = stat.read_text().rsplit(")", 1)
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):  # it exited meanwhile
            continue
        pid, comm = int(stat.parent.name), comm.split("(", 1)[1]
        cpu = (int(fields.split()[11]) + int(fields.split()[12])) / tick
        if pid == os.getpid():
            name = "driver"
        elif "ray" not in cmdline:
            name = "other"
        elif comm.startswith("python"):
            name = next((pathlib.Path(a).stem for a in cmdline.split() if a.endswith(".py")), comm)
        else:
            name = comm
        out[pid] = (name, cpu)
    return out


def _machine_busy_s() -> float:
    """CPU seconds every core of this machine has spent busy so far (``/proc/stat``)."""
    jiffies = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = jiffies[3] + jiffies[4]  # idle, iowait
    return (sum(jiffies[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed_run(p, address: str, duration_s: float) -> tuple[Any, dict[str, float], float]:
    """Run ``p`` for ``duration_s``: its summary, CPU seconds by process, the machine's busy s.

    CPU is read from ``/proc`` between the start and the end of the run, before the actors
    exit: each replica's process (the runtime's ``placed`` has its pid) under its operator's
    name, every other process grouped by what it is (``_processes``).
    """
    import ray

    from pipelines._runtime import Runtime

    runtime = Runtime(p, address=address, placement_timeout_s=PLACEMENT_S)
    runtime.deploy()
    ray.get(runtime.controller.actors.remote())  # started in the background: let it settle
    actors = {info["pid"]: info["actor"].split("/", 1)[1].rsplit("#", 1)[0]
              for info in runtime.placed.values()}  # fmt: skip
    before, busy = _processes(), _machine_busy_s()
    runtime.start()
    runtime.wait(duration_s)
    after, busy = _processes(), _machine_busy_s() - busy
    cpu: dict[str, float] = {}
    for pid, (name, used) in after.items():
        key = actors.get(pid, f"ray:{name}" if name not in ("driver", "other") else name)
        cpu[key] = cpu.get(key, 0.0) + used - before.get(pid, (name, 0.0))[1]
    return runtime.finish(), cpu, busy


#: The drive the real-time figures come from.
FLEET_DRIVE = {"scenario": "car_following", "seed": 0, "held_out": True}


def record_sensors(path: pathlib.Path, seconds: float) -> float:
    """Record ``seconds`` of ``FLEET_DRIVE``'s camera (30 Hz), lidar and ego streams at
    ``path`` (the simulator holding its lane and speed: nothing steers it); return the
    simulator's CPU ms per camera frame (rendering, lidar scan, kinematics), in this process.
    """
    sim = DrivingSimulator(FLEET_DRIVE["scenario"], seed=FLEET_DRIVE["seed"],
                           held_out=FLEET_DRIVE["held_out"])  # fmt: skip
    sim.setup(Context(operator="sim"))
    items, cpu = [], 0.0
    while len(items) < 1 or items[-1][1].event_ts < seconds * 1e9:
        started = time.process_time()
        out = sim.poll(0)
        cpu += time.process_time() - started
        if out is None:
            break
        items += out
    write_recording(path, items, ports=SENSOR_PORTS)
    return 1e3 * cpu / sum(port == "camera" for port, _ in items)


class RecordedSensors(Source):
    """The sensor streams of a recorded drive, replayed one simulator step per poll.

    Inputs: none. Outputs: ``ego``, ``lidar``, ``camera`` as recorded. Each poll emits the
    messages of the next ``1 / poll_hz`` seconds of event time (the ``DrivingSimulator``'s
    polling contract, so a pipeline rate of ``poll_hz`` replays in real time). Unlike
    ``Replay(pace="recorded")``, which decodes each message as it emits it, the whole
    recording is decoded in ``setup``, before the clock starts: what the vehicle's
    operators then cost is theirs, the sensor's being the runtime's put of each frame,
    as for a camera driver.
    """

    outputs = SENSOR_PORTS

    def __init__(self, path: str, *, poll_hz: float = 30.0) -> None:
        self.path = path
        self.step_ns = round(1e9 / poll_hz)
        self.steps: list[list[tuple[str, Message]]] = []
        self.position = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "steps": []}  # a copy decodes the recording in its setup

    def setup(self, ctx: Context) -> None:
        items = list(read_recording(self.path))
        last = max(m.event_ts for _, m in items) // self.step_ns + 1
        self.steps = [[] for _ in range(last)]
        for port, message in items:
            self.steps[message.event_ts // self.step_ns].append((port, message))

    def poll(self, now: int) -> list[tuple[str, Message]] | None:
        if self.position >= len(self.steps):
            return None
        self.position += 1
        return self.steps[self.position - 1]

    def snapshot(self) -> int:
        return self.position

    def restore(self, state: int) -> None:
        self.position = state


def _cpu_per_frame(cpu: dict[str, float], frames: int, ops: set[str]) -> dict[str, Any]:
    per_frame = {name: round(1e3 * s / frames, 2)
                 for name, s in sorted(cpu.items(), key=lambda kv: -kv[1]) if s > 0}  # fmt: skip
    operators = {op: ms for op, ms in per_frame.items() if op in ops}
    return {
        "cpu_ms_per_frame": operators,
        "cpu_ms_per_frame_operators": round(sum(operators.values()), 2),
        "cpu_ms_per_frame_not_operators": {
            name: ms for name, ms in per_frame.items() if name not in operators and ms >= 0.1
        },
    }


def on_fleet(duration_s: float, tmp: pathlib.Path) -> dict[str, Any]:
    """Four runs on the local fleet: recorded sensors (the vehicle's compute alone) paced at
    30 Hz and unpaced, then the closed loop on the simulator paced and unpaced."""
    import ray

    from cluster._local import LocalFleet
    from cluster._spec import default_spec_path, load_spec

    recording = tmp / "sensors"
    sim_ms = record_sensors(recording, duration_s + 4.0)

    def pipeline(realtime: bool, tag: str, replay: bool):
        sensors = RecordedSensors(str(recording)) if replay else None
        p = build(FLEET_DRIVE["scenario"], seed=FLEET_DRIVE["seed"],
                  held_out=FLEET_DRIVE["held_out"], out_dir=tmp / tag, realtime=realtime,
                  video_hz=2.0, sensors=sensors)  # fmt: skip
        _tap(p, "command_latency", "control.control", tmp / f"{tag}-command.npy")
        _tap(p, "perception_latency", "perception.objects", tmp / f"{tag}-perception.npy")
        return p

    runs = {}
    spec = load_spec(default_spec_path())
    with LocalFleet(spec, state_dir=str(tmp / "fleet"), dashboard_port=0) as fleet:
        try:
            for tag, realtime, replay in (
                ("replay", True, True),
                ("replay-unpaced", False, True),
                ("sim", True, False),
                ("sim-unpaced", False, False),
            ):
                p = pipeline(realtime, tag, replay)
                runs[tag] = (set(p.specs), *timed_run(p, fleet.address, duration_s))
        finally:
            ray.shutdown()
    out: dict[str, Any] = {"sim_cpu_ms_per_frame": round(sim_ms, 2)}
    for tag, prefix in (("replay", ""), ("sim", "closed_loop_")):
        ops, summary, cpu, busy = runs[tag]
        camera = next(a for e, a in summary.edges.items() if e.endswith("->perception.camera"))
        command = np.load(tmp / f"{tag}-command.npy")
        perception = np.load(tmp / f"{tag}-perception.npy")
        out |= {
            f"{prefix}latency_p50_ms": round(float(np.percentile(command, 50)), 2),
            f"{prefix}latency_p99_ms": round(float(np.percentile(command, 99)), 2),
            f"{prefix}perception_p50_ms": round(float(np.percentile(perception, 50)), 2),
            f"{prefix}perception_p99_ms": round(float(np.percentile(perception, 99)), 2),
            f"{prefix}camera_hz": round(camera.sent / summary.duration_s, 2),
            f"{prefix}perception_fps": round(camera.delivered / summary.duration_s, 2),
            f"{prefix}camera_dropped": dict(camera.dropped),
            f"{prefix}identity_holds": summary.identity_holds(),
            **{prefix + k: v for k, v in _cpu_per_frame(cpu, camera.sent, ops).items()},
            f"{prefix}cpu_ms_per_frame_machine": round(1e3 * busy / camera.sent, 2),
        }
    for tag, key in (("replay-unpaced", "max_fps"), ("sim-unpaced", "closed_loop_max_fps")):
        ops, summary, cpu, busy = runs[tag]
        camera = next(a for e, a in summary.edges.items() if e.endswith("->perception.camera"))
        out[key] = round(camera.delivered / summary.duration_s, 2)
        out[f"{key}_identity_holds"] = summary.identity_holds()
        out[f"{key}_busy_cores"] = round(busy / summary.duration_s, 2)  # of the machine's 2
        out[f"{key}_cpu_ms_per_frame"] = _cpu_per_frame(cpu, camera.delivered, ops)[
            "cpu_ms_per_frame"
        ]
    out["streams_at_30hz"] = int(out["max_fps"] // 30)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.driving", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one seed, shorter fleet runs")
    ap.add_argument(
        "--only",
        choices=STAGES,
        action="append",
        help="run only these stages (repeatable; nothing is saved)",
    )
    args = ap.parse_args(argv)
    seeds = (0,) if args.quick else (0, 1)
    started = time.perf_counter()
    result: dict[str, Any] = {"quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="bench-driving-") as d:
        tmp = pathlib.Path(d)
        stages = {
            "detection": lambda: detection_map(seeds, tmp),
            "lanes": lambda: lane_offset_error(seeds, camera_hz=5.0),
            "signs": sign_accuracy,
            "closed-loop": lambda: closed_loop(seeds, PERCEPTION_DRIVES, tmp),
            "fleet": lambda: on_fleet(8.0 if args.quick else 12.0, tmp),
        }
        for name in args.only or STAGES:
            stage = stages[name]
            t = time.perf_counter()
            result.update(stage())
            print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    line = json.dumps(result)
    if not (args.quick or args.only):
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "driving.json").write_text(line + "\n")
    print(line)
    return result


if __name__ == "__main__":
    main()
