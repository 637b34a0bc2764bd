"""``validate(pipeline, nodes)``: each defect gives one clear error, and nothing runs.

Also the label-selector semantics of ``pipelines._placement``, which follow
Ray's ``label_selector``: ``"v"``, ``"!v"``, ``"in(a,b)"``, ``"!in(a,b)"``; a
negative term matches a node that lacks the key (Ray's ``NOT_IN`` on a
missing label).
"""

from __future__ import annotations

import re

import pytest

from operators import Field, Message, Operator, Port, Resources, Source
from pipelines import Node, Pipeline, Placement, ValidationError, validate
from pipelines._placement import closest, matches, node_labels, satisfying
from pipelines.testing import ListSink, ListSource, run_local

FRAME = {"image": Field("uint8", (None, None, 3))}


class Camera(Source):
    """Frames on ``frames``; needs the node's ``camera`` resource."""

    outputs = (Port("frames", FRAME),)
    resources = Resources(num_cpus=0.5, custom={"camera": 1})

    def __init__(self) -> None:
        self.calls: list[str] = []

    def setup(self, ctx) -> None:
        self.calls.append("setup")

    def poll(self, now: int):
        self.calls.append("poll")
        return None


class Detector(Operator):
    """Frames on ``frames`` (declared schema) to ``detections``."""

    inputs = (Port("frames", FRAME),)
    outputs = ("detections",)

    def __init__(self, *, schema=None, gpus: float = 0.0) -> None:
        if schema is not None:
            self.inputs = (Port("frames", schema),)
        self.resources = Resources(num_gpus=gpus)
        self.calls: list[str] = []

    def setup(self, ctx) -> None:
        self.calls.append("setup")

    def process(self, port: str, message: Message):
        self.calls.append("process")
        yield "detections", message


class Fusion(Operator):
    """Two inputs, ``camera`` and ``lidar``; one output ``fused``."""

    inputs = ("camera", "lidar")
    outputs = ("fused",)


class Relay(Operator):
    """``in`` to ``out``."""

    inputs = ("in",)
    outputs = ("out",)


class Simulator(Source):
    """A source with a feedback input ``commands`` (actuation) and an output ``state``."""

    inputs = ("commands",)
    outputs = ("state",)

    def poll(self, now: int):
        return None


def camera_pipeline(**det) -> tuple[Pipeline, Camera, Detector, ListSink]:
    """``cam -> det -> out``: valid unless a test breaks it."""
    p = Pipeline("drive")
    cam, detector, sink = Camera(), Detector(**det), ListSink()
    p.source("cam", cam, rate_hz=30)
    p.operator("det", detector)
    p.sink("out", sink)
    p.connect("cam.frames", "det.frames")
    p.connect("det.detections", "out.in")
    return p, cam, detector, sink


def problems_of(p: Pipeline, nodes=None) -> list[str]:
    with pytest.raises(ValidationError) as info:
        p.validate(nodes)
    assert info.value.pipeline == p.name
    assert str(info.value).startswith(f"pipeline {p.name!r} is invalid:\n  - ")
    return info.value.problems


def assert_nothing_runs(p: Pipeline, *probes) -> None:
    """``run_local`` rejects the pipeline before any operator is set up or called."""
    with pytest.raises(ValidationError):
        run_local(p)
    for probe in probes:
        assert probe.calls == []


# -- the graph --------------------------------------------------------------------------
def test_valid_pipeline_passes():
    # prepare
    p, *_ = camera_pipeline()

    # execute / assert (no exception)
    p.validate()
    validate(p, None)


def test_cycle_is_rejected_and_names_the_back_edge():
    # prepare
    p = Pipeline("loop")
    probe = Detector(schema={})
    p.source("src", ListSource([{"x": 1}]))
    p.operator("a", Relay())
    p.operator("b", probe)
    p.operator("c", Relay())
    p.connect("src", "a")
    p.connect("a", "b.frames")
    p.connect("b", "c")
    p.connect("c", "b.frames")

    # execute
    problems = problems_of(p)

    # assert
    assert problems == [
        "cycle b -> c -> b: a pipeline is acyclic; mark the back edge "
        "connect(..., feedback=True) if 'c' -> 'b' is feedback"
    ]
    assert_nothing_runs(p, probe)


def test_same_cycle_is_accepted_when_the_back_edge_is_feedback():
    # prepare
    p = Pipeline("loop")
    p.source("src", ListSource([{"x": 1}]))
    p.operator("a", Relay())
    p.operator("b", Detector(schema={}))
    p.operator("c", Relay())
    p.connect("src", "a")
    p.connect("a", "b.frames")
    p.connect("b", "c")
    p.connect("c", "b.frames", feedback=True)

    # execute / assert
    p.validate()
    assert [e.feedback for e in p.edges] == [False, False, False, True]


def test_feedback_into_a_source_is_accepted():
    # prepare: controller commands flow back into the simulator that applies them
    p = Pipeline("sim")
    p.source("sim", Simulator(), rate_hz=20)
    p.operator("ctl", Relay())
    p.sink("log", ListSink())
    p.connect("sim.state", "ctl.in")
    p.connect("ctl.out", "log.in")
    p.connect("ctl.out", "sim.commands", feedback=True)

    # execute / assert
    p.validate()
    assert p.upstream_sources("log") == {"sim"}


def test_dangling_edge_names_the_unknown_operator_and_the_known_ones():
    # prepare
    p, cam, det, _ = camera_pipeline()
    p.connect("det.detections", "ghost.in")

    # execute
    problems = problems_of(p)

    # assert
    assert problems == [
        "edge det.detections->ghost.in: no operator 'ghost' in the pipeline (known: cam, det, out)"
    ]
    assert_nothing_runs(p, cam, det)


def test_dangling_source_end_is_rejected():
    # prepare
    p, *_ = camera_pipeline()
    p.connect("lidar.points", "out.in")

    # execute / assert
    assert problems_of(p) == [
        "edge lidar.points->out.in: no operator 'lidar' in the pipeline (known: cam, det, out)"
    ]


def test_mistyped_input_port_lists_the_declared_ports():
    # prepare
    p = Pipeline("drive")
    cam, det = Camera(), Detector()
    p.source("cam", cam)
    p.operator("det", det)
    p.sink("out", ListSink())
    p.connect("cam.frames", "det.frame")
    p.connect("det.detections", "out.in")

    # execute
    problems = problems_of(p)

    # assert
    assert problems == [
        "edge cam.frames->det.frame: operator 'det' has no input port 'frame' "
        "(it declares: frames); fix the port name"
    ]
    assert_nothing_runs(p, cam, det)


def test_mistyped_output_port_lists_the_declared_ports():
    # prepare
    p = Pipeline("drive")
    p.source("cam", Camera())
    p.operator("det", Detector())
    p.sink("out", ListSink())
    p.connect("cam.frames", "det.frames")
    p.connect("det.detection", "out.in")

    # execute / assert
    assert problems_of(p) == [
        "edge det.detection->out.in: operator 'det' has no output port 'detection' "
        "(it declares: detections); fix the port name"
    ]


def test_port_left_out_on_an_operator_with_several_inputs():
    # prepare
    p = Pipeline("fuse")
    p.source("cam", Camera())
    p.operator("fusion", Fusion())
    p.sink("out", ListSink())
    p.connect("cam", "fusion")
    p.connect("fusion", "out")

    # execute / assert
    assert problems_of(p) == [
        "'fusion': operator 'fusion' has 2 inputs (camera, lidar); name one as 'fusion.<port>'"
    ]


def test_publish_and_subscribe_ports_are_checked():
    # prepare
    p, *_ = camera_pipeline()
    p.publish("det.detection", "v2v/detections")
    p.subscribe("v2v/emergency", "det.alerts")

    # execute / assert
    assert problems_of(p) == [
        "publish v2v/detections: operator 'det' has no output port 'detection' "
        "(it declares: detections); fix the port name",
        "subscribe v2v/emergency: operator 'det' has no input port 'alerts' "
        "(it declares: frames); fix the port name",
    ]


def test_subscribed_input_counts_as_connected():
    # prepare
    p = Pipeline("listener")
    p.sink("log", ListSink())
    p.subscribe("v2v/emergency", "log")

    # execute / assert
    p.validate()


@pytest.mark.parametrize(
    ("schema", "got", "want"),
    [
        ({"image": Field("float32", (None, None, 3))}, "uint8[None, None, 3]",
         "float32[None, None, 3]"),
        ({"image": Field("uint8", (None, None, 1))}, "uint8[None, None, 3]",
         "uint8[None, None, 1]"),
        ({"image": Field("uint8", (None, 3))}, "uint8[None, None, 3]", "uint8[None, 3]"),
    ],
    ids=["dtype", "channels", "rank"],
)  # fmt: skip
def test_schema_mismatch_between_connected_ports(schema, got, want):
    # prepare
    p, cam, det, _ = camera_pipeline(schema=schema)

    # execute
    problems = problems_of(p)

    # assert
    assert problems == [
        f"edge cam.frames->det.frames: field 'image' is {got} at 'cam' but 'det' expects "
        f"{want}; make the two port schemas agree, or convert it in an operator between them"
    ]
    assert_nothing_runs(p, cam, det)


def test_schema_field_missing_at_the_producer():
    # prepare
    p, *_ = camera_pipeline(schema={**FRAME, "depth": Field("float32", (None, None))})

    # execute / assert
    assert problems_of(p) == [
        "edge cam.frames->det.frames: 'det' expects payload field 'depth', which 'cam' does "
        "not declare; add it or fix the field name"
    ]


@pytest.mark.parametrize(
    "schema",
    [
        {"image": Field("uint8", (360, 640, 3))},  # concrete sizes accept "any size"
        {"image": Field("uint8")},  # no shape declared: any shape
        {},  # declares nothing
        None,  # keeps the class schema
    ],
)
def test_compatible_schemas_pass(schema):
    # prepare
    p, *_ = camera_pipeline(schema=schema)

    # execute / assert
    p.validate()


def test_duplicate_name_is_rejected():
    # prepare
    p, *_ = camera_pipeline()
    second = Detector()
    p.operator("det", second)

    # execute / assert
    assert problems_of(p) == [
        "duplicate name 'det': two operators are called 'det'; give each a unique name"
    ]
    assert_nothing_runs(p, second)


def test_operator_with_no_input_connected():
    # prepare
    p, cam, det, _ = camera_pipeline()
    orphan = Detector()
    p.operator("orphan", orphan)

    # execute / assert
    assert problems_of(p) == [
        "operator 'orphan' has no input connected; connect one of its inputs (frames) or remove it"
    ]
    assert_nothing_runs(p, cam, det, orphan)


def test_sink_with_no_input_connected():
    # prepare
    p, *_ = camera_pipeline()
    p.sink("unused", ListSink())

    # execute / assert
    assert problems_of(p) == [
        "operator 'unused' has no input connected; connect one of its inputs (in) or remove it"
    ]


def test_source_that_is_not_a_source():
    # prepare
    p = Pipeline("drive")
    not_a_source = Detector()
    p.source("cam", not_a_source)
    p.sink("out", ListSink())
    p.connect("cam.detections", "out.in")

    # execute / assert
    assert problems_of(p) == [
        "source 'cam': Detector is not an operators.Source; derive it from Source and "
        "implement poll(now)"
    ]
    assert_nothing_runs(p, not_a_source)


def test_object_that_is_not_an_operator():
    # prepare
    p = Pipeline("drive")
    p.source("cam", Camera())
    p.operator("det", lambda m: m)
    p.sink("out", ListSink())
    p.connect("cam.frames", "det")
    p.connect("det.detections", "out")

    # execute / assert
    assert problems_of(p, [Node("n", resources={"CPU": 4, "camera": 1})]) == [
        "operator 'det': got a function, expected an instance of an operators.Operator subclass"
    ]


def test_sink_with_outputs():
    # prepare
    p = Pipeline("drive")
    p.source("cam", Camera())
    p.sink("out", Detector())
    p.connect("cam.frames", "out.frames")

    # execute / assert
    assert problems_of(p) == ["sink 'out': a sink has no outputs; add it with p.operator()"]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"policy": "drop-newest"},
         "edge cam.frames->det.frames: policy='drop-newest'; use one of block, drop-oldest, "
         "latest-only"),
        ({"window": 0}, "edge cam.frames->det.frames: window=0; use 1 or more"),
        ({"rate_hz": 0}, "edge cam.frames->det.frames: rate_hz=0; use a positive rate or None"),
        ({"deadline_ms": -5},
         "edge cam.frames->det.frames: deadline_ms=-5; use a positive deadline or None"),
    ],
    ids=["policy", "window", "rate", "deadline"],
)  # fmt: skip
def test_bad_edge_policy_or_window(kwargs, problem):
    # prepare
    p = Pipeline("drive")
    cam, det = Camera(), Detector()
    p.source("cam", cam)
    p.operator("det", det)
    p.sink("out", ListSink())
    p.connect("cam.frames", "det.frames", **kwargs)
    p.connect("det", "out")

    # execute / assert
    assert problems_of(p) == [problem]
    assert_nothing_runs(p, cam, det)


@pytest.mark.parametrize("policy", ["block", "drop-oldest", "latest-only"])
def test_every_documented_policy_is_accepted(policy):
    # prepare
    p = Pipeline("drive")
    p.source("cam", Camera())
    p.sink("out", ListSink())
    p.connect("cam", "out", policy=policy, window=1, rate_hz=5, deadline_ms=100)

    # execute / assert
    p.validate()


def test_bad_rate_replicas_and_time_mode():
    # prepare
    p = Pipeline("drive", time="simulated")
    p.source("cam", Camera(), rate_hz=-1)
    p.sink("out", ListSink(), replicas=0)
    p.connect("cam", "out")

    # execute / assert
    assert problems_of(p) == [
        "time='simulated': use one of wall, event",
        "source 'cam': rate_hz=-1; use a positive rate",
        "operator 'out': replicas=0; use 1 or more",
    ]


def test_every_defect_is_listed_at_once():
    # prepare
    p = Pipeline("broken")
    p.source("cam", Camera())
    p.operator("det", Detector())
    p.operator("det", Detector())
    p.connect("cam.frames", "det.frame", window=0)

    # execute
    problems = problems_of(p)

    # assert
    assert len(problems) == 3
    assert problems[0].startswith("duplicate name 'det'")
    assert problems[1].startswith("edge cam.frames->det.frame: window=0")
    assert problems[2].startswith("edge cam.frames->det.frame: operator 'det' has no input port")


# -- placement against a node table ------------------------------------------------------------
def fleet() -> list[Node]:
    return [
        Node("n-veh1", {"edge.node": "vehicle-1", "edge.role": "vehicle", "edge.zone": "north",
                        "edge.sensor.camera": "true"}, {"CPU": 4, "camera": 1}),
        Node("n-rsu1", {"edge.node": "rsu-1", "edge.role": "rsu", "edge.zone": "north",
                        "edge.accel": "gpu"}, {"CPU": 8, "GPU": 1}),
        Node("n-rsu2", {"edge.node": "rsu-2", "edge.role": "rsu", "edge.zone": "south"},
             {"CPU": 8}),
        Node("n-hub1", {"edge.node": "hub-1", "edge.role": "hub", "edge.zone": "south"},
             {"CPU": 16}),
        Node("n-veh2", {"edge.node": "vehicle-2", "edge.role": "vehicle", "edge.zone": "south",
                        "edge.sensor.camera": "true"}, {"CPU": 4, "camera": 1}, alive=False),
    ]  # fmt: skip


def placed(cam=None, det=None, det_fallbacks=(), replicas=1, **det_kwargs) -> Pipeline:
    p = Pipeline("drive")
    p.source("cam", Camera(), placement=cam or {"edge.role": "vehicle"})
    p.operator(
        "det", Detector(**det_kwargs), placement=det, fallbacks=det_fallbacks, replicas=replicas
    )
    p.sink("out", ListSink(), placement={"edge.role": "hub"})
    p.connect("cam", "det")
    p.connect("det", "out")
    return p


def test_placement_that_every_operator_satisfies_passes():
    # execute / assert
    placed(det={"edge.role": "rsu"}).validate(fleet())


def test_unsatisfiable_selector_names_operator_selector_and_closest_nodes():
    # prepare
    p = placed(det={"edge.role": "rsu", "edge.zone": "east"})

    # execute
    problems = problems_of(p, fleet())

    # assert
    assert problems == [
        "operator 'det': no live node satisfies {edge.role=rsu, edge.zone=east} with resources "
        "{'CPU': 0.25}; closest: rsu-1 (differs on edge.zone=north); rsu-2 (differs on "
        "edge.zone=south); vehicle-1 (differs on edge.role=vehicle, edge.zone=north). "
        "Fix the selector or add fallbacks, or start a node with those labels and resources"
    ]


def test_absent_label_is_shown_as_absent():
    # prepare
    p = placed(det={"edge.accel": "tpu"})

    # execute
    [problem] = problems_of(p, fleet())

    # assert
    assert "closest: vehicle-1 (differs on edge.accel=<absent>)" in problem


def test_fallbacks_are_honoured_in_order():
    # prepare
    cloud_then_hub = placed(det={"edge.role": "cloud"}, det_fallbacks=[{"edge.role": "hub"}])
    nothing_fits = placed(det={"edge.role": "cloud"}, det_fallbacks=[{"edge.role": "satellite"}])

    # execute
    cloud_then_hub.validate(fleet())
    problems = problems_of(nothing_fits, fleet())

    # assert
    assert problems[0].startswith(
        "operator 'det': no live node satisfies {edge.role=cloud} | {edge.role=satellite} "
    )


def test_custom_resources_are_checked():
    # prepare: the camera source needs {"camera": 1}; only vehicles have it
    p = placed(cam={"edge.zone": "north", "edge.role": "rsu"})

    # execute
    problems = problems_of(p, fleet())

    # assert
    assert problems == [
        "operator 'cam': no live node satisfies {edge.zone=north, edge.role=rsu} with "
        "resources {'CPU': 0.5, 'camera': 1}; closest: rsu-1 (differs on resources); "
        "vehicle-1 (differs on edge.role=vehicle); rsu-2 (differs on edge.zone=south). "
        "Fix the selector or add fallbacks, or start a node with those labels and resources"
    ]


def test_gpu_need_is_checked_against_node_resources():
    # prepare
    north = placed(det={"edge.zone": "north"}, gpus=1)
    south = placed(det={"edge.zone": "south"}, gpus=1)

    # execute
    north.validate(fleet())
    [problem] = problems_of(south, fleet())

    # assert
    assert problem.startswith(
        "operator 'det': no live node satisfies {edge.zone=south} with resources "
        "{'CPU': 0.25, 'GPU': 1}; closest: rsu-2 (differs on resources); hub-1 (differs on "
        "resources);"
    )


def test_dead_nodes_are_ignored():
    # prepare: only the dead vehicle-2 is a southern vehicle
    p = placed(cam={"edge.role": "vehicle", "edge.zone": "south"})

    # execute
    [problem] = problems_of(p, fleet())

    # assert
    assert problem.startswith(
        "operator 'cam': no live node satisfies {edge.role=vehicle, edge.zone=south}"
    )
    assert "vehicle-2" not in problem


def test_no_live_nodes_at_all():
    # prepare
    dead = [Node(n.node_id, n.labels, n.resources, alive=False) for n in fleet()]
    p = placed(det={"edge.role": "rsu"})

    # execute
    problems = problems_of(p, dead)

    # assert
    assert len(problems) == 3
    assert all("closest: no live nodes." in x for x in problems)


def test_placement_is_checked_only_with_a_node_table():
    # prepare
    p = placed(det={"edge.role": "nowhere"})

    # execute / assert: the graph alone is fine
    p.validate()
    assert problems_of(p, fleet())[0].startswith("operator 'det': no live node satisfies")


def test_operator_without_placement_runs_anywhere_that_fits():
    # prepare
    p = placed()

    # execute / assert
    p.validate(fleet())
    assert problems_of(p, [Node("tiny", {"edge.role": "vehicle"}, {"CPU": 0.1, "camera": 1})])


def test_node_pin_is_honoured():
    # prepare
    pinned_live = placed(det=Placement(node_id="n-hub1"))
    pinned_dead = placed(det=Placement(node_id="n-veh2"))

    # execute
    pinned_live.validate(fleet())
    [problem] = problems_of(pinned_dead, fleet())

    # assert
    assert problem.startswith(
        "operator 'det': no live node satisfies {ray.io/node-id=n-veh2} with resources "
        "{'CPU': 0.25}; closest: vehicle-1 (differs on ray.io/node-id=n-veh1)"
    )


def test_keyed_replicas_are_each_checked_against_their_own_placement():
    # prepare
    p = Pipeline("city")
    p.source("cam", Camera(), placement={"edge.role": "vehicle"})
    p.operator(
        "ctl",
        Detector(),
        keys={
            "ix-north": {"edge.node": "rsu-1"},
            "ix-south": {"edge.node": "rsu-2"},
            "ix-east": {"edge.node": "rsu-9"},
            "ix-west": Placement({"edge.node": "rsu-7"}, fallbacks=({"edge.role": "hub"},)),
        },
    )
    p.sink("out", ListSink())
    p.connect("cam", "ctl")
    p.connect("ctl", "out")

    # execute
    problems = problems_of(p, fleet())

    # assert
    assert [x.split(":")[0] for x in problems] == ["operator 'ctl' replica 'ix-east'"]
    assert problems[0].startswith(
        "operator 'ctl' replica 'ix-east': no live node satisfies {edge.node=rsu-9} "
    )
    assert p.specs["ctl"].replicas == 4
    assert p.specs["ctl"].key_by == "source"


def test_keyed_replica_needs_its_resources_on_its_own_node():
    # prepare: GPU detector per intersection; only rsu-1 has a GPU
    p = Pipeline("city")
    p.source("cam", Camera())
    p.operator(
        "det",
        Detector(gpus=1),
        keys={"ix-1": {"edge.node": "rsu-1"}, "ix-2": {"edge.node": "rsu-2"}},
    )
    p.sink("out", ListSink())
    p.connect("cam", "det")
    p.connect("det", "out")

    # execute
    problems = problems_of(p, fleet())

    # assert
    assert problems == [
        "operator 'det' replica 'ix-2': no live node satisfies {edge.node=rsu-2} with "
        "resources {'CPU': 0.25, 'GPU': 1}; closest: rsu-2 (differs on resources); "
        "vehicle-1 (differs on edge.node=vehicle-1); rsu-1 (differs on edge.node=rsu-1). "
        "Fix the selector or add fallbacks, or start a node with those labels and resources"
    ]


def test_replicas_without_keys_share_one_placement():
    # prepare
    p = placed(det={"edge.role": "cloud"}, replicas=3)

    # execute
    problems = problems_of(p, fleet())

    # assert: one problem for the operator, not one per replica
    assert len(problems) == 1
    assert problems[0].startswith("operator 'det': no live node satisfies {edge.role=cloud}")


# -- selector semantics (Ray's label_selector) -------------------------------------------------
LABELS = {"edge.role": "vehicle", "edge.zone": "north", "edge.accel": "gpu"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, True),
        ({"edge.role": "vehicle"}, True),
        ({"edge.role": "rsu"}, False),
        ({"edge.missing": "x"}, False),
        ({"edge.role": "!rsu"}, True),
        ({"edge.role": "!vehicle"}, False),
        ({"edge.missing": "!x"}, True),  # negation matches a node without the key
        ({"edge.role": "in(rsu,vehicle)"}, True),
        ({"edge.role": "in(rsu, vehicle)"}, True),  # Ray allows a space after the comma
        ({"edge.role": "in(rsu,hub)"}, False),
        ({"edge.role": "in(vehicle)"}, True),
        ({"edge.missing": "in(a,b)"}, False),
        ({"edge.role": "!in(rsu,hub)"}, True),
        ({"edge.role": "!in(rsu,vehicle)"}, False),
        ({"edge.role": "!in(rsu, vehicle)"}, False),
        ({"edge.missing": "!in(a,b)"}, True),  # negation matches a node without the key
        ({"edge.role": "vehicle", "edge.zone": "north"}, True),  # terms are ANDed
        ({"edge.role": "vehicle", "edge.zone": "south"}, False),
        ({"edge.role": "in(vehicle,rsu)", "edge.zone": "!south", "edge.accel": "gpu"}, True),
        ({"edge.role": "vehicl"}, False),  # whole values, not prefixes
        ({"edge.role": "in(vehicles)"}, False),
    ],
)
def test_selector_semantics(selector, expected):
    # execute / assert
    assert matches(selector, LABELS) is expected


def test_node_id_is_a_label_of_every_node():
    # prepare
    node = Node("abc123", {"edge.role": "hub"})

    # execute / assert
    assert node_labels(node) == {"edge.role": "hub", "ray.io/node-id": "abc123"}
    assert matches({"ray.io/node-id": "abc123"}, node_labels(node))
    assert matches({"ray.io/node-id": "!abc123"}, node_labels(node)) is False


def test_satisfying_returns_the_nodes_of_the_first_selector_any_node_satisfies():
    # prepare
    placement = Placement({"edge.role": "rsu"}, fallbacks=({"edge.role": "hub"},))
    hub_first = Placement({"edge.role": "hub"}, fallbacks=({"edge.role": "rsu"},))
    only_fallback = Placement({"edge.role": "cloud"}, fallbacks=({"edge.zone": "south"},))

    # execute
    rsus = satisfying(placement, {"CPU": 1}, fleet())
    hubs = satisfying(hub_first, {"CPU": 1}, fleet())
    south = satisfying(only_fallback, {"CPU": 1}, fleet())
    big = satisfying(placement, {"CPU": 12}, fleet())

    # assert
    assert [n.name for n in rsus] == ["rsu-1", "rsu-2"]
    assert [n.name for n in hubs] == ["hub-1"]
    assert [n.name for n in south] == ["rsu-2", "hub-1"]  # the dead vehicle-2 is left out
    assert [n.name for n in big] == ["hub-1"]  # rsus too small: the fallback's node


def test_closest_ranks_by_matching_terms_and_limits_to_k():
    # prepare
    placement = Placement({"edge.role": "rsu", "edge.zone": "south", "edge.accel": "gpu"})

    # execute
    near = closest(placement, fleet(), k=2)

    # assert
    assert near == [
        "rsu-1 (differs on edge.zone=north)",
        "rsu-2 (differs on edge.accel=<absent>)",
    ]


def test_placement_str_shows_selectors_and_pin():
    # prepare
    placement = Placement({"edge.role": "rsu"}, fallbacks=({"edge.role": "hub"},), node_id="n1")

    # execute / assert
    assert str(placement) == (
        "{edge.role=rsu, ray.io/node-id=n1} | {edge.role=hub, ray.io/node-id=n1}"
    )
    assert str(Placement()) == "{}"


def test_problem_messages_never_leak_reprs_of_objects():
    # prepare
    p, *_ = camera_pipeline(schema={"image": Field("float32", (None, None, 3))})

    # execute
    [problem] = problems_of(p)

    # assert
    assert not re.search(r"<\w+ object at 0x", problem)


def test_an_operator_niceness_outside_0_to_19_is_refused():
    with pytest.raises(ValueError, match="niceness must be an integer 0-19"):
        Resources(niceness=20)
    with pytest.raises(ValueError, match="niceness"):
        Resources(niceness=-1)
