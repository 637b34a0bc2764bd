"""Fleet specs, `ray start` lines, KubeRay manifests, pipeline files and the CLI's bad-input
paths: pure, no Ray started."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from cluster._deploy import join_command, kuberay_manifest
from cluster._errors import FleetError, FleetSpecError
from cluster._ray_config import WORKER_NICENESS
from cluster._spec import default_spec_path, load_spec, parse_spec
from models import EdgerayError
from pipelines._errors import PipelineFileError
from pipelines._pipeline_file import load_pipeline_module
from pipelines.cli import main

LOCAL = default_spec_path()

GOOD = """
[fleet]
name = "t"

[[nodes]]
name = "car-1"
role = "vehicle"
sensors = ["camera"]
num_cpus = 1
memory = "1GiB"
object_store_memory = "100MB"
resources = { camera = 1 }

[[nodes]]
name = "car-2"
role = "vehicle"
zone = "south"
num_cpus = 1
memory = "1GiB"
object_store_memory = "100MB"

[[nodes]]
name = "hub-1"
role = "hub"
num_cpus = 2
memory = "2GiB"
object_store_memory = "200MB"
"""


def spec_error(text: str) -> FleetSpecError:
    with pytest.raises(FleetSpecError) as info:
        parse_spec(text, "fleet.toml")
    return info.value


# ---------------------------------------------------------------------------- the shipped spec


def test_local_spec_has_a_vehicle_a_roadside_unit_and_a_hub_sized_for_two_cores():
    spec = load_spec(LOCAL)
    assert spec.name == "local"
    assert {n.role for n in spec.nodes} >= {"vehicle", "rsu", "hub"}
    vehicle = spec.node("vehicle-1")
    assert vehicle.labels["edge.sensor.camera"] == "true"
    assert vehicle.labels["edge.sensor.lidar"] == "true"
    assert vehicle.labels["edge.node"] == "vehicle-1"
    assert vehicle.resources == {"camera": 1}
    assert vehicle.geo is not None
    assert sum(n.memory + n.object_store_memory for n in spec.nodes) < 8 * 2**30
    assert all(n.object_store_memory <= 256 * 10**6 for n in spec.nodes)
    assert spec.head.dashboard_port == 8265
    assert {(link.a, link.b) for link in spec.links} >= {("vehicle-1", "rsu-1")}


def test_labels_are_one_key_per_fact_plus_edge_node():
    spec = parse_spec(GOOD, "fleet.toml")
    assert dict(spec.node("car-2").labels) == {
        "edge.node": "car-2",
        "edge.role": "vehicle",
        "edge.zone": "south",
    }
    assert [n.name for n in spec.roles()["vehicle"]] == ["car-1", "car-2"]


# ---------------------------------------------------------------------------- bad input


def test_a_typo_names_file_node_field_and_the_likely_fix():
    e = spec_error(GOOD.replace("num_cpus = 2", "num_cpu = 2"))
    assert (e.path, e.node, e.field) == ("fleet.toml", "hub-1", "num_cpu")
    assert "fleet spec fleet.toml, node 'hub-1', field 'num_cpu'" in str(e)
    assert "did you mean 'num_cpus'?" in str(e)


def test_a_missing_field_is_named_with_an_example():
    e = spec_error(GOOD.replace('memory = "2GiB"\n', ""))
    assert (e.node, e.field) == ("hub-1", "memory")
    assert "missing required field 'memory'" in str(e)
    assert "[[nodes]]" in str(e)


def test_a_duplicate_node_is_rejected():
    e = spec_error(GOOD.replace('name = "car-2"', 'name = "car-1"'))
    assert (e.node, e.field) == ("car-1", "name")
    assert "duplicate node name" in str(e)


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        (('zone = "south"', 'zone = "south west"'), "zone", "cannot be a Ray label value"),
        (('zone = "south"', 'zone = "a,b"'), "zone", "cannot be a Ray label value"),
        (('role = "hub"', f'role = "{"h" * 64}"'), "role", "at most 63 characters"),
        (
            ('role = "hub"', 'role = "hub"\nlabels = { "ray.io/zone" = "x" }'),
            "labels.ray.io/zone",
            "which Ray reserves",
        ),
        (
            ('role = "hub"', 'role = "hub"\nlabels = { "-bad" = "x" }'),
            "labels.-bad",
            "not a valid Ray label name",
        ),
        (('sensors = ["camera"]', 'sensors = ["cam era"]'), "sensors", "not a valid Ray label"),
    ],
)
def test_labels_ray_cannot_carry_are_rejected(change, field, says):
    e = spec_error(GOOD.replace(*change, 1))
    assert e.field == field
    assert says in str(e)


def test_a_fractional_node_resource_is_rejected_because_ray_refuses_it():
    e = spec_error(GOOD.replace("num_cpus = 2", "num_cpus = 1.5"))
    assert (e.node, e.field) == ("hub-1", "num_cpus")
    assert "whole number" in str(e)


def test_a_link_to_an_unknown_node_is_rejected():
    text = GOOD + '\n[[links]]\na = "car-1"\nb = "hub-9"\nlatency_ms = 5\nbandwidth_mbps = 10\n'
    e = spec_error(text)
    assert (e.node, e.field) == ("hub-9", "links[0].b")
    assert "unknown node 'hub-9'" in str(e)


def test_bad_sizes_and_bad_toml_are_explained():
    e = spec_error(GOOD.replace('memory = "2GiB"', 'memory = "lots"'))
    assert e.field == "memory"
    assert '"1.5GiB"' in str(e)
    e = spec_error("[fleet\nname=")
    assert "not valid TOML" in str(e)


def test_spec_errors_are_fleet_errors_and_edgeray_errors():
    assert issubclass(FleetSpecError, FleetError)
    assert issubclass(FleetError, EdgerayError)


# ---------------------------------------------------------------------------- real devices


def test_join_command_is_one_shell_safe_ray_start_line():
    spec = parse_spec(GOOD, "fleet.toml")
    line = join_command(spec, "car-1", "10.0.0.5:6379")
    argv = shlex.split(line)
    assert argv[:3] == ["ray", "start", "--address=10.0.0.5:6379"]
    opts = dict(a.removeprefix("--").split("=", 1) for a in argv[3:])
    assert opts["labels"] == "edge.node=car-1,edge.role=vehicle,edge.sensor.camera=true"
    assert json.loads(opts["resources"]) == {"camera": 1}
    assert opts["num-cpus"] == "1"
    assert opts["object-store-memory"] == "100000000"


def test_join_command_for_an_unknown_node_lists_the_known_ones():
    with pytest.raises(FleetSpecError, match="car-1, car-2, hub-1"):
        join_command(parse_spec(GOOD, "fleet.toml"), "car-9", "10.0.0.5:6379")


# KubeRay's documented RayCluster fields (ray.io/v1; docs.ray.io "RayCluster Configuration",
# KubeRay API reference): the names a manifest may use at each level.
RAYCLUSTER_SPEC = {"rayVersion", "headGroupSpec", "workerGroupSpecs", "authOptions"}
HEAD_GROUP = {"serviceType", "rayStartParams", "template"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"}


def test_kuberay_manifest_has_one_worker_group_per_role_with_documented_fields():
    doc = kuberay_manifest(parse_spec(GOOD, "fleet.toml"))
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == "RayCluster"
    assert doc["metadata"]["name"] == "t"
    assert set(doc["spec"]) <= RAYCLUSTER_SPEC
    assert doc["spec"]["authOptions"] == {"mode": "token"}
    assert set(doc["spec"]["headGroupSpec"]) <= HEAD_GROUP
    head_config = json.loads(doc["spec"]["headGroupSpec"]["rayStartParams"]["system-config"])
    assert head_config == {"worker_niceness": WORKER_NICENESS}
    groups = {g["groupName"]: g for g in doc["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"vehicle", "hub"}
    for g in groups.values():
        assert set(g) == WORKER_GROUP
        assert all(isinstance(v, str) for v in g["rayStartParams"].values())
        assert g["template"]["spec"]["containers"][0]["image"].startswith("rayproject/ray:")
    assert groups["vehicle"]["replicas"] == 2
    assert groups["hub"]["replicas"] == 1
    # labels the role's nodes share; not edge.node, and not what differs between them
    assert groups["vehicle"]["rayStartParams"]["labels"] == "edge.role=vehicle"
    assert groups["hub"]["rayStartParams"]["num-cpus"] == "2"


def test_kuberay_command_prints_json_which_is_yaml(capsys):
    assert main(["kuberay", str(LOCAL)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {g["groupName"] for g in doc["spec"]["workerGroupSpecs"]} == {"vehicle", "rsu", "hub"}
    vehicle = next(g for g in doc["spec"]["workerGroupSpecs"] if g["groupName"] == "vehicle")
    assert json.loads(json.loads(vehicle["rayStartParams"]["resources"])) == {"camera": 1}


def test_join_cmd_command(capsys):
    assert main(["join-cmd", str(LOCAL), "rsu-1", "--address", "192.168.1.10:6379"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ray start --address=192.168.1.10:6379 --labels=")
    assert "edge.role=rsu" in out


# ---------------------------------------------------------------------------- CLI bad input


def test_up_with_a_bad_spec_starts_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("num_cpus = 2", "num_cpu = 2"))
    state = tmp_path / "state"
    assert main(["up", str(bad), "--state-dir", str(state)]) == 1
    err = capsys.readouterr().err
    assert f"fleet spec {bad}, node 'hub-1', field 'num_cpu'" in err
    assert not state.exists()


def test_down_with_nothing_up_says_so_and_succeeds(tmp_path, capsys):
    assert main(["down", "--state-dir", str(tmp_path)]) == 0
    assert "no fleet is up" in capsys.readouterr().out


def test_env_with_nothing_up_is_an_error_that_says_how_to_start_one(tmp_path, capsys):
    assert main(["env", "--state-dir", str(tmp_path)]) == 1
    assert "edgeray up cluster/fleets/local.toml" in capsys.readouterr().err


# ---------------------------------------------------------------------------- pipeline files


def test_a_pipeline_file_without_build_shows_the_expected_shape(tmp_path):
    f = tmp_path / "nobuild.py"
    f.write_text("X = 1\n")
    with pytest.raises(PipelineFileError) as info:
        load_pipeline_module(f)
    assert str(f) in str(info.value)
    assert "def build() -> Pipeline:" in str(info.value)


def test_a_pipeline_file_is_imported_as_a_module_not_run_as_main(tmp_path):
    f = tmp_path / "p.py"
    f.write_text(
        "def build():\n    return 'built'\n\n"
        "if __name__ == '__main__':\n    raise SystemExit('ran as main')\n"
    )
    assert load_pipeline_module(f).build() == "built"


def test_shipped_test_pipeline_files_load():
    root = Path(__file__).resolve().parents[2]
    for name in ("fleet_job.py", "fleet_drain_job.py"):
        assert callable(load_pipeline_module(root / "tests" / "system" / name).build)
