"""The operator conformance suite (river's ``check_estimator``).

Finds every ``Operator`` subclass defined in the ``operators`` package (all of
its submodules, imported with ``pkgutil``) and the harness operators in
``pipelines.testing``, and checks the contract for each:

* ports are declared: tuples of ``str`` or ``Port``, no duplicates, names an
  edge can refer to (``"op.port"``), a sink has no outputs, a source
  implements ``poll``, any other operator has an input;
* class-level defaults are immutable (no list / dict / set class attributes or
  ``__init__`` defaults);
* the instance pickles before ``setup`` and after processing a few messages;
* what it emits is ``(declared_port, Message)`` pairs that fit the port's schema;
* ``snapshot()`` pickles, and ``restore`` into a fresh instance gives the same
  snapshot;
* it has a docstring of its own that names its ports.

Each operator needs an example constructor in ``EXAMPLES`` below: a new
operator without one fails here with a message saying what to add.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pathlib
import pickle
import pkgutil
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from test_city_operators import CITY_EXAMPLES
from test_vehicle_units import VEHICLE_EXAMPLES

import operators
from operators import Context, Field, Message, Operator, Port, Sink, Source
from operators._chain import Chain
from pipelines.data import data_path

# -- discovery ---------------------------------------------------------------------------------
#: The contract's own base classes: abstract, not operators to run.
BASES = (Operator, Source, Sink, Chain)
#: Modules outside ``operators`` whose operators must conform too.
HARNESS_MODULES = ("pipelines.testing",)


def _import_all(package: types.ModuleType) -> tuple[list[types.ModuleType], dict[str, str]]:
    modules, broken = [package], {}

    def onerror(name: str) -> None:
        broken[name] = "could not be walked"

    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.", onerror=onerror):
        try:
            modules.append(importlib.import_module(info.name))
        except Exception as err:  # reported by test_every_operators_module_imports
            broken[info.name] = f"{type(err).__name__}: {err}"
    return modules, broken


def _operator_classes(modules: Sequence[types.ModuleType]) -> list[type[Operator]]:
    found = {}
    for module in modules:
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, Operator)
                and obj not in BASES
                and obj.__module__ == module.__name__
                and not name.startswith("_")
                and not inspect.isabstract(obj)
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


_MODULES, BROKEN = _import_all(operators)
_MODULES += [importlib.import_module(m) for m in HARNESS_MODULES]
OPERATOR_CLASSES = _operator_classes(_MODULES)


# -- examples ----------------------------------------------------------------------------------
class Env:
    """What an example constructor gets: a scratch directory and the shared data."""

    def __init__(self, tmp_path: pathlib.Path, operator: str) -> None:
        self.tmp_path = tmp_path
        self.operator = operator

    def data(self, *parts: str) -> pathlib.Path:
        """``pipelines.data.data_path(*parts)``; skips the test when the data is absent."""
        try:
            return data_path(*parts)
        except FileNotFoundError as err:
            pytest.skip(f"{self.operator} needs shared test data that is absent here: {err}")


@dataclass(frozen=True)
class Example:
    """How to build one operator for the suite, and what to feed it.

    ``make(env)`` returns a fresh instance (called more than once per test).
    ``feed(env)`` returns ``(input_port, message)`` pairs to process; by default
    one message per input port, three times, with payloads that fit the ports'
    schemas. Sources are polled ``polls`` times instead.
    """

    make: Callable[[Env], Operator]
    feed: Callable[[Env], list[tuple[str, Message]]] | None = None
    polls: int = 3


def _road(height: int = 180, width: int = 320) -> np.ndarray:
    import cv2

    road = np.zeros((height, width, 3), np.uint8)
    cv2.line(road, (width // 6, height), (width // 2 - 10, height * 3 // 5), (255, 255, 255), 4)
    cv2.line(road, (width * 5 // 6, height), (width // 2 + 10, height * 3 // 5), (255,) * 3, 4)
    return road


def _frames(env: Env) -> list[tuple[str, Message]]:
    road = _road()
    return [("frames", Message("cam", i, i * 33_000_000, {"image": road, "frame": i}))
            for i in range(3)]  # fmt: skip


def _clip(env: Env) -> pathlib.Path:
    """A 6-frame MJPG clip written for the test (VideoSource without the shared data)."""
    import cv2

    path = env.tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(6):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    return path


def _video(make_path: Callable[[Env], pathlib.Path], **kw) -> Callable[[Env], Operator]:
    def make(env: Env) -> Operator:
        from operators.video import VideoSource

        return VideoSource(make_path(env), **kw)

    return make


def _list_source(env: Env) -> Operator:
    from pipelines.testing import ListSource

    return ListSource([{"x": np.arange(3) + i, "label": f"n{i}"} for i in range(5)])


def _list_sink(env: Env) -> Operator:
    from pipelines.testing import ListSink

    return ListSink()


def _lanes(env: Env) -> Operator:
    from operators.lanes import LaneDetector

    return LaneDetector(keep_image=False)


def _parquet(env: Env) -> Operator:
    from operators.parquet_sink import ParquetSink

    return ParquetSink(env.tmp_path / "recorded", rows_per_file=2)


def _driving(env: Env) -> Operator:
    from operators.driving import DrivingSimulator

    return DrivingSimulator("cut_in", poll_hz=10.0)


def _messages(env: Env) -> list[tuple[str, Message]]:
    return [("in", Message("cam", i, i, {"n": i, "box": np.ones(4, np.float32) * i}))
            for i in range(5)]  # fmt: skip


def _kitti(synthetic: bool) -> Callable[[Env], Operator]:
    """KittiSource over 2 synthetic frames written for the test, or the real kitti-sample."""

    def make(env: Env) -> Operator:
        from operators.calibration import Calibration
        from operators.kitti import KittiSource, write_kitti_frame

        if not synthetic:
            return KittiSource(env.data("kitti-sample"))
        root = env.tmp_path / "kitti"
        if not root.exists():
            eye = np.eye(3, 4)
            calib = Calibration(P2=eye, R0_rect=np.eye(3), Tr_velo_to_cam=eye)
            for i in range(2):
                image, points = np.full((8, 16, 3), i, np.uint8), np.ones((3, 4), np.float32) * i
                write_kitti_frame(root, f"{i:06d}", image=image, points=points, calibration=calib)
        return KittiSource(root)

    return make


def _recorder(env: Env) -> Operator:
    from operators.recording import Recorder

    return Recorder(env.tmp_path / "recording", batch_rows=2)


def _replay(env: Env) -> Operator:
    """Replay of a 5-message, two-port recording written for the test."""
    from operators.recording import Replay, write_recording

    root = env.tmp_path / "replay"
    if not root.exists():
        msgs = [Message("cam", i, i * 1000, {"box": np.ones(4, np.float32) * i}) for i in range(5)]
        write_recording(root, [("camera" if i % 2 else "lidar", m) for i, m in enumerate(msgs)])
    return Replay(root, pace="fast")


def _detector(env: Env) -> Operator:
    from operators.detection import ObjectDetector

    return ObjectDetector(model=env.data("detector-yolox-nano", "yolox_nano.onnx"))


def _signs(env: Env) -> Operator:
    from operators.signs import SignRecognizer

    return SignRecognizer()


def _fusion(env: Env) -> Operator:
    from operators.calibration import Calibration
    from operators.fusion import SensorFusion

    return SensorFusion(calibration=Calibration.simple(focal=700.0, cx=600.0, cy=180.0))


def _detections_and_scans(env: Env) -> list[tuple[str, Message]]:
    """Camera-side detections at 30 Hz and lidar scans at 10 Hz, one frame left unpartnered."""
    dets = {
        "boxes": np.array([[590, 170, 610, 190]], np.float32),
        "scores": np.array([0.9], np.float32),
        "classes": np.array([2], np.int32),
    }
    scan = {"points": np.array([[10.0, 0.0, 0.0, 0.5], [np.nan, 0, 0, 0]], np.float32)}
    camera = [("camera", Message("cam", i, i * 33_000_000, dets)) for i in range(4)]
    lidar = [("lidar", Message("velo", i, i * 100_000_000, scan)) for i in range(2)]
    return [camera[0], lidar[0], camera[1], camera[2], camera[3], lidar[1]]


def _op(module: str, name: str) -> Operator:
    """A default-configured operator from ``operators.<module>``."""
    return getattr(importlib.import_module(f"operators.{module}"), name)()


def _safety_feed(env: Env) -> list[tuple[str, Message]]:
    """Ego at 15 m/s and an obstacle closing at 10 m/s (the last scans are an emergency)."""
    out = [("ego", Message("gps", 0, 0, {"speed": 15.0, "yaw_rate": 0.0, "x": 1.0, "y": 2.0}))]
    for i in range(4):
        x = 25.0 - 1.0 * i
        pts = np.array([[x, 0.0, 1.0, 0.5], [x, 0.4, 0.8, 0.5], [np.nan, 0, 0, 0]], np.float32)
        out.append(("lidar", Message("velo", i, i * 100_000_000, {"points": pts})))
    return out


def _decision_feed(env: Env) -> list[tuple[str, Message]]:
    safety = {"event": "scan", "nearest_m": 20.0, "closing_mps": 4.0, "in_path": True,
              "stale": np.array([], "<U16")}  # fmt: skip
    return [
        ("lanes", Message("lanes", 0, 0, {"offset_m": 0.2, "heading_rad": 0.01})),
        ("signs", Message("signs", 0, 0, {"classes": np.array([2]), "distances_m": [30.0]})),
        ("safety", Message("safety", 0, 0, safety)),
        ("ego", Message("gps", 0, 10_000_000, {"speed": 15.0})),
        ("advisory", Message("v2v", 0, 20_000_000, {"target_speed_mps": 8.0, "hold_s": 5.0})),
        ("emergency", Message("safety", 1, 30_000_000, {"ttc_s": 1.5})),
        ("ego", Message("gps", 1, 40_000_000, {"speed": 14.0})),
    ]


def _controller_feed(env: Env) -> list[tuple[str, Message]]:
    return [
        ("decision", Message("d", i, i * 20_000_000, {"accel_mps2": -2.0 * i, "aeb": i == 2,
                                                      "steer_rad": 0.01 * i, "reason": "r"}))
        for i in range(3)
    ]  # fmt: skip


def _emergency_feed(env: Env) -> list[tuple[str, Message]]:
    e = {"kind": "collision_imminent", "x": 1.0, "y": 2.0, "ttc_s": 1.2, "time_ns": 0}
    other = {"kind": "collision_imminent", "vehicle": "car-2", "x": 50.0, "y": 2.0}
    return [
        ("ego", Message("gps", 0, 0, {"x": 1.0, "y": 2.0})),
        ("emergency", Message("safety", 0, 0, e)),
        ("v2v", Message("v2v", 0, 5, other)),
    ]


#: One entry per operator class name; a list gives several variants.
def _annotator(env: Env) -> Operator:
    from operators.annotate import Annotator

    return Annotator(class_names=("vehicle", "pedestrian", "sign"))


def _annotator_feed(env: Env) -> list[tuple[str, Message]]:
    objects = {
        "boxes": np.array([[10, 10, 60, 50]], np.float32),
        "classes": np.array([0], np.int32),
        "distance_m": np.array([9.0], np.float32),
    }
    control = {"throttle": 0.2, "brake": 0.0, "steer": 0.01, "reason": "cruise"}
    return [("objects", Message("cam", 0, 0, objects)), ("control", Message("cam", 0, 0, control)),
            *((("camera", m)) for _, m in _frames(env))]  # fmt: skip


def _annotated_video(env: Env) -> Operator:
    from operators.annotate import AnnotatedVideo

    return AnnotatedVideo(env.tmp_path / "video", clip_frames=2, strip_every=1)


def _annotated_frames(env: Env) -> list[tuple[str, Message]]:
    return [("annotated", m) for _, m in _frames(env)]


EXAMPLES: dict[str, Example | list[Example]] = {
    **{name: Example(*args) for name, args in CITY_EXAMPLES.items()},  # smart-city operators
    **{name: Example(*args) for name, args in VEHICLE_EXAMPLES.items()},  # a vehicle's units
    "ListSource": Example(_list_source, polls=6),
    "ListSink": Example(_list_sink, feed=_messages),
    "Annotator": Example(_annotator, feed=_annotator_feed),
    "AnnotatedVideo": Example(_annotated_video, feed=_annotated_frames),
    "DrivingSimulator": Example(_driving, polls=3),
    "LaneDetector": Example(_lanes, feed=_frames),
    "ObjectDetector": Example(_detector, feed=lambda env: [("camera", m) for _, m in _frames(env)]),
    "SensorFusion": Example(_fusion, feed=_detections_and_scans),
    "SignRecognizer": Example(_signs, feed=lambda env: [("camera", m) for _, m in _frames(env)]),
    "ParquetSink": Example(_parquet, feed=_messages),
    "KittiSource": [Example(_kitti(synthetic=True), polls=3), Example(_kitti(synthetic=False))],
    "Recorder": Example(_recorder, feed=_messages),
    "Replay": Example(_replay, polls=3),
    "SafetyMonitor": Example(lambda env: _op("safety", "SafetyMonitor"), feed=_safety_feed),
    "DecisionMaker": Example(lambda env: _op("decision", "DecisionMaker"), feed=_decision_feed),
    "Controller": Example(lambda env: _op("controller", "Controller"), feed=_controller_feed),
    "EmergencyHandler": Example(
        lambda env: _op("emergency", "EmergencyHandler"), feed=_emergency_feed
    ),
    "VideoSource": [
        Example(_video(_clip, max_frames=4), polls=5),
        Example(
            _video(
                lambda env: env.data("lanes-udacity", "p1", "test_videos", "solidWhiteRight.mp4")
            ),
            polls=3,
        ),
    ],
}


# -- helpers -----------------------------------------------------------------------------------
def same(a: Any, b: Any) -> bool:
    """Deep equality that understands numpy arrays, dataclasses, mappings and sequences."""
    if isinstance(a, np.ndarray | np.generic) or isinstance(b, np.ndarray | np.generic):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, Operator):  # an operator composed of operators (e.g. RoadsideUnit)
        return type(a) is type(b) and same(a.__getstate__(), b.__getstate__())
    return type(a) is type(b) and a == b


def ctx_for(name: str) -> Context:
    return Context(pipeline="conformance", operator=name, replica=0)


def sample_payload(port: Port) -> dict[str, Any]:
    """A payload that fits ``port.schema`` (``None`` dimensions become 16)."""
    payload: dict[str, Any] = {"n": 1}
    for name, want in (port.schema or {}).items():
        shape = tuple(16 if d is None else d for d in (want.shape or (4,)))
        payload[name] = np.zeros(shape, np.dtype(want.dtype))
    return payload


def default_feed(op: Operator) -> list[tuple[str, Message]]:
    return [
        (name, Message("conformance", i, i * 1000, sample_payload(port)))
        for i in range(3)
        for name, port in op.ports("inputs").items()
    ]


def drive(op: Operator, example: Example, env: Env) -> list[tuple[str, Message]]:
    """Process the example's messages (or poll a source); returns what it emitted."""
    emitted: list[tuple[str, Message]] = []
    if isinstance(op, Source):
        for step in range(example.polls):
            out = op.poll(step * 100_000_000)
            if out is None:
                break
            emitted += list(out)
        return emitted
    feed = example.feed(env) if example.feed else default_feed(op)
    for port, message in feed:
        emitted += list(op.process(port, message) or ())
    return emitted


def mutable_defaults(cls: type) -> list[str]:
    bad = []
    for klass in cls.__mro__:
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if name.startswith("__") or callable(value) or isinstance(value, property):
                continue
            if isinstance(value, staticmethod | classmethod):
                continue
            if _is_mutable(value):
                bad.append(f"{klass.__name__}.{name} = {value!r:.60}")
    init = cls.__init__
    if init is not object.__init__:
        for p in inspect.signature(init).parameters.values():
            if p.default is not inspect.Parameter.empty and _is_mutable(p.default):
                bad.append(f"{cls.__name__}.__init__({p.name}={p.default!r:.60})")
    return bad


def _is_mutable(value: Any) -> bool:
    if isinstance(value, list | dict | set | bytearray | np.ndarray):
        return True
    if isinstance(value, tuple | frozenset):
        return any(_is_mutable(v) for v in value)
    return False


def check_emitted(op: Operator, emitted: list[tuple[str, Message]]) -> None:
    outputs = op.ports("outputs")
    for i, item in enumerate(emitted):
        assert isinstance(item, tuple) and len(item) == 2, (
            f"{type(op).__name__} emitted {item!r:.80} (item {i}); "
            "return (output_port, Message) pairs"
        )
        port, message = item
        assert port in outputs, (
            f"{type(op).__name__} emitted on {port!r}, which it does not declare "
            f"(outputs: {', '.join(outputs) or 'none'})"
        )
        assert isinstance(message, Message), (
            f"{type(op).__name__} emitted a {type(message).__name__} on {port!r}; emit a Message"
        )
        for name, want in (outputs[port].schema or {}).items():
            value = message.payload.get(name)
            assert isinstance(value, np.ndarray), (
                f"{type(op).__name__} port {port!r} declares payload field {name!r} but "
                f"emitted {type(value).__name__}"
            )
            assert want.accepts(Field(str(value.dtype), value.shape)), (
                f"{type(op).__name__} port {port!r} field {name!r} is "
                f"{value.dtype}{list(value.shape)}, declared {want.dtype}{list(want.shape or [])}"
            )


def _examples_of(cls: type[Operator]) -> list[Example]:
    entry = EXAMPLES.get(cls.__name__)
    if entry is None:
        return []
    return entry if isinstance(entry, list) else [entry]


CASES = [
    pytest.param(cls, i, id=f"{cls.__module__}.{cls.__qualname__}" + (f"[{i}]" if i else ""))
    for cls in OPERATOR_CLASSES
    for i in range(max(1, len(_examples_of(cls))))
]
CLASSES = [pytest.param(cls, id=f"{cls.__module__}.{cls.__qualname__}") for cls in OPERATOR_CLASSES]


@pytest.fixture
def build(tmp_path):
    """``build(cls, variant)`` → (make, example, env); fails for a class without an example."""

    def _build(cls: type[Operator], variant: int):
        examples = _examples_of(cls)
        if not examples:
            pytest.fail(
                f"{cls.__module__}.{cls.__qualname__} has no example in EXAMPLES of "
                f"tests/unit/test_conformance.py; add one, e.g. "
                f'"{cls.__name__}": Example(lambda env: {cls.__name__}(...)) '
                "(use env.tmp_path for files it writes and env.data(...) for shared data)",
                pytrace=False,
            )
        example = examples[variant]
        env = Env(tmp_path, cls.__name__)
        return (lambda: example.make(env)), example, env

    return _build


# -- the suite ---------------------------------------------------------------------------------
def test_every_operators_module_imports():
    # assert
    assert BROKEN == {}, f"modules under operators/ that fail to import: {BROKEN}"


def test_the_suite_finds_operators():
    # assert: at least the harness operators; an empty suite would prove nothing
    names = {cls.__name__ for cls in OPERATOR_CLASSES}
    assert {"ListSource", "ListSink"} <= names


def test_every_example_names_an_existing_operator():
    # prepare
    names = {cls.__name__ for cls in OPERATOR_CLASSES}

    # assert
    stale = sorted(set(EXAMPLES) - names)
    assert stale == [], f"EXAMPLES has entries for operators that no longer exist: {stale}"


@pytest.mark.parametrize("cls", CLASSES)
def test_has_an_example(cls, build):
    # execute / assert (fails with what to add)
    build(cls, 0)


@pytest.mark.parametrize("cls", CLASSES)
def test_docstring_names_its_ports(cls):
    # prepare
    doc = cls.__dict__.get("__doc__") or ""
    ports = cls.port_names("inputs") + cls.port_names("outputs")

    # assert
    assert doc.strip(), f"{cls.__name__} has no docstring of its own; say what it does"
    missing = [p for p in ports if not re.search(rf"\b{re.escape(p)}\b", doc)]
    assert missing == [], f"{cls.__name__}'s docstring does not name its ports {missing}"


@pytest.mark.parametrize("cls", CLASSES)
def test_class_level_defaults_are_immutable(cls):
    # execute
    bad = mutable_defaults(cls)

    # assert
    assert bad == [], (
        f"{cls.__name__} shares mutable defaults between instances: {bad}; use tuples / "
        "frozen dataclasses / MappingProxyType, or create them in __init__"
    )


@pytest.mark.parametrize(("cls", "variant"), CASES)
def test_ports_are_declared(cls, variant, build):
    # prepare
    make, _, _ = build(cls, variant)
    op = make()

    # execute / assert: on the class and on the instance (which may override them)
    for owner in (cls, op):
        for direction in ("inputs", "outputs"):
            declared = getattr(owner, direction)
            where = f"{cls.__name__}.{direction}"
            assert isinstance(declared, tuple), (
                f"{where} is a {type(declared).__name__}; use a tuple"
            )
            assert all(isinstance(p, str | Port) for p in declared), (
                f"{where} holds {[type(p).__name__ for p in declared]}; use str or Port"
            )
            names = [p if isinstance(p, str) else p.name for p in declared]
            assert len(names) == len(set(names)), f"{where} declares {names} twice"
            for name in names:
                assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name), (
                    f"{where} port {name!r}: use a name without dots or spaces, so "
                    "connect('op.port', ...) can refer to it"
                )
    if isinstance(op, Sink):
        assert op.ports("outputs") == {}, f"{cls.__name__} is a Sink with outputs"
    if isinstance(op, Source):
        assert type(op).poll is not Source.poll, f"{cls.__name__} does not implement poll(now)"
    else:
        assert op.ports("inputs"), f"{cls.__name__} is not a Source but declares no inputs"
    assert op.tick_period_ns is None or (
        isinstance(op.tick_period_ns, int) and op.tick_period_ns > 0
    ), f"{cls.__name__}.tick_period_ns={op.tick_period_ns!r}; use None or a positive int (ns)"
    assert isinstance(op.version, str), f"{cls.__name__}.version must be a str"


@pytest.mark.parametrize(("cls", "variant"), CASES)
def test_pickles_before_setup_and_after_processing(cls, variant, build):
    # prepare
    make, example, env = build(cls, variant)
    op = make()

    # execute: before setup
    fresh = pickle.loads(pickle.dumps(op))

    # assert
    assert type(fresh) is cls
    assert same(fresh.__getstate__(), op.__getstate__()), (
        f"{cls.__name__} changes in a pickle round trip before setup"
    )

    # execute: after processing a few messages
    op.setup(ctx_for(cls.__name__))
    try:
        drive(op, example, env)
        used = pickle.loads(pickle.dumps(op))

        # assert
        assert type(used) is cls
        assert same(used.__getstate__(), op.__getstate__()), (
            f"{cls.__name__} changes in a pickle round trip after processing"
        )
    finally:
        op.teardown()


@pytest.mark.parametrize(("cls", "variant"), CASES)
def test_emits_declared_ports_and_schemas(cls, variant, build):
    # prepare
    make, example, env = build(cls, variant)
    op = make()
    op.setup(ctx_for(cls.__name__))

    # execute
    try:
        emitted = drive(op, example, env)
    finally:
        op.teardown()

    # assert
    check_emitted(op, emitted)
    if isinstance(op, Source):
        assert emitted, f"{cls.__name__} emitted nothing in {example.polls} polls"


@pytest.mark.parametrize(("cls", "variant"), CASES)
def test_snapshot_restore_into_a_fresh_instance(cls, variant, build):
    # prepare
    make, example, env = build(cls, variant)
    op = make()
    op.setup(ctx_for(cls.__name__))
    drive(op, example, env)

    # execute
    state = op.snapshot()
    moved = pickle.loads(pickle.dumps(state))  # the state travels to another process
    fresh = make()
    fresh.setup(ctx_for(cls.__name__))
    fresh.restore(moved)

    # assert
    try:
        assert same(fresh.snapshot(), state), (
            f"{cls.__name__}: restore(snapshot()) into a fresh instance does not give the "
            f"same snapshot: {fresh.snapshot()!r:.200} != {state!r:.200}"
        )
    finally:
        op.teardown()
        fresh.teardown()


@pytest.mark.parametrize(("cls", "variant"), CASES)
def test_restored_instance_carries_on_like_the_original(cls, variant, build):
    # prepare: process, snapshot, restore into a fresh instance, then process more in both
    make, example, env = build(cls, variant)
    op = make()
    op.setup(ctx_for(cls.__name__))
    drive(op, example, env)
    state = op.snapshot()
    fresh = make()
    fresh.setup(ctx_for(cls.__name__))
    fresh.restore(pickle.loads(pickle.dumps(state)))

    # execute
    try:
        more_original = drive(op, example, env)
        more_restored = drive(fresh, example, env)
    finally:
        op.teardown()
        fresh.teardown()

    # assert: the same outputs (identity and payload) from both
    def summary(out):
        return [(p, m.key, m.event_ts, dict(m.payload)) for p, m in out]

    assert same(summary(more_restored), summary(more_original)), (
        f"{cls.__name__}: after restore, the fresh instance emits differently from the original"
    )
