"""The model registry: references, register/resolve/alias/remove, integrity, CLI (no Ray)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from _onnx_files import UINT8, identity_model

from models import (
    AliasInUse,
    BadModelRef,
    CorruptArtifact,
    Manifest,
    ModelNotFound,
    ModelRef,
    NotAnOnnxModel,
    Registry,
    RegistryError,
)
from models.registry import default_root
from pipelines.data import PROJECT_ROOT


@pytest.fixture
def registry(tmp_path):
    return Registry(tmp_path / "registry", now=lambda: 1_700_000_000.0)


@pytest.fixture
def onnx(tmp_path):
    return identity_model(tmp_path / "tiny.onnx", shape=(1, 3, None, None))


# -- references ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("detector@3", ModelRef("detector", version=3)),
        ("detector@stable", ModelRef("detector", alias="stable")),
        ("yolox-nano_v2.1@canary", ModelRef("yolox-nano_v2.1", alias="canary")),
    ],
)
def test_a_reference_is_name_at_version_or_alias(text, expected):
    # execute
    ref = ModelRef.parse(text)

    # assert
    assert ref == expected and str(ref) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("detector", r"not NAME@VERSION or NAME@ALIAS; e\.g\. 'detector@3'"),
        ("detector@", r"not NAME@VERSION or NAME@ALIAS"),
        ("@3", r"not NAME@VERSION or NAME@ALIAS"),
        ("a@b@c", r"not NAME@VERSION or NAME@ALIAS"),
        ("detector@0", r"versions start at 1"),
        ("det/ector@3", r"model name 'det/ector' is not valid"),
        ("detector@sta ble", r"alias in 'detector@sta ble' 'sta ble' is not valid"),
    ],
)
def test_a_malformed_reference_is_refused_with_an_example(text, why):
    # execute / assert
    with pytest.raises(BadModelRef, match=why):
        ModelRef.parse(text)


def test_the_default_registry_follows_the_environment(monkeypatch, tmp_path):
    # prepare
    monkeypatch.setenv("EDGERAY_MODELS", str(tmp_path))

    # execute / assert
    assert default_root() == str(tmp_path)
    monkeypatch.delenv("EDGERAY_MODELS")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_root() == str(tmp_path / "data" / "edgeray" / "models")


# -- register / resolve --------------------------------------------------------------------------
def test_register_reads_the_tensors_and_numbers_versions(registry, onnx):
    # execute
    first = registry.register("tiny", onnx, metrics={"mAP": 0.4}, produced_by="run 17")
    second = registry.register("tiny", onnx.read_bytes(), parent=1, produced_by="round 3")

    # assert
    assert (first.version, second.version) == (1, 2)
    assert first.inputs[0].describe() == "images float32[1, 3, ?, ?]"
    assert first.outputs[0].name == "output"
    assert first.metrics == {"mAP": 0.4} and first.produced_by == "run 17"
    assert second.parent == 1 and first.sha256 == second.sha256
    assert first.created_at == "2023-11-14T22:13:20Z"
    assert registry.names() == ["tiny"]
    assert [m.version for m in registry.versions("tiny")] == [1, 2]
    assert registry.resolve("tiny@2") == second
    layout = pathlib.Path(registry.root) / "tiny" / "1"
    assert json.loads((layout / "manifest.json").read_text())["sha256"] == first.sha256
    assert (layout / "model.onnx").read_bytes() == onnx.read_bytes()


def test_a_manifest_round_trips_through_json(registry, onnx):
    # prepare
    m = registry.register("tiny", onnx, metrics={"latency_ms": 3})

    # execute / assert
    assert Manifest.from_json(m.to_json()) == m


def test_bytes_that_are_not_onnx_are_refused_naming_the_file(registry, tmp_path):
    # prepare
    bogus = tmp_path / "detector.onnx"
    bogus.write_text("not a model")

    # execute / assert
    with pytest.raises(NotAnOnnxModel, match=r"detector\.onnx' \(11 bytes\) is not an ONNX model"):
        registry.register("detector", bogus)
    with pytest.raises(NotAnOnnxModel, match=r"bytes given for model 'detector'"):
        registry.register("detector", b"\x00\x01garbage")
    with pytest.raises(NotAnOnnxModel, match=r"missing\.onnx' does not exist"):
        registry.register("detector", tmp_path / "missing.onnx")
    assert registry.names() == []


def test_a_bad_parent_or_metric_is_refused(registry, onnx):
    # execute / assert
    with pytest.raises(ModelNotFound, match=r"parent version 5 of 'tiny' is not in registry"):
        registry.register("tiny", onnx, parent=5)
    with pytest.raises(RegistryError, match=r"metric 'mAP' of model 'tiny' is 'high'"):
        registry.register("tiny", onnx, metrics={"mAP": "high"})


def test_an_unknown_version_or_alias_says_what_exists(registry, onnx):
    # prepare
    registry.register("tiny", onnx)
    registry.alias("tiny", "stable", 1)

    # execute / assert
    with pytest.raises(ModelNotFound, match=r"'tiny@4' not found .*versions of 'tiny': 1"):
        registry.resolve("tiny@4")
    with pytest.raises(ModelNotFound, match=r"no alias 'canary' .*its aliases: stable->1"):
        registry.resolve("tiny@canary")
    with pytest.raises(ModelNotFound, match=r"versions of 'other': none; models: tiny"):
        registry.resolve("other@1")


# -- aliases / remove ----------------------------------------------------------------------------
def test_aliases_point_at_versions_and_move(registry, onnx):
    # prepare
    registry.register("tiny", onnx)
    registry.register("tiny", onnx)

    # execute
    registry.alias("tiny", "stable", 1)
    registry.alias("tiny", "canary", 2)
    registry.alias("tiny", "stable", 2)

    # assert
    assert registry.aliases("tiny") == {"canary": 2, "stable": 2}
    assert registry.resolve("tiny@stable").version == 2
    with pytest.raises(ModelNotFound, match=r"'tiny@7' not found"):
        registry.alias("tiny", "stable", 7)
    with pytest.raises(BadModelRef, match=r"alias '12' of 'tiny' is all digits"):
        registry.alias("tiny", "12", 1)


def test_remove_refuses_a_version_an_alias_points_at(registry, onnx):
    # prepare
    registry.register("tiny", onnx)
    registry.register("tiny", onnx)
    registry.alias("tiny", "stable", 1)

    # execute / assert
    with pytest.raises(AliasInUse, match=r"cannot remove 'tiny@1': alias stable points at it"):
        registry.remove("tiny@1")
    removed = registry.remove("tiny@2")
    assert removed.version == 2
    assert [m.version for m in registry.versions("tiny")] == [1]
    with pytest.raises(ModelNotFound):
        registry.resolve("tiny@2")


def test_a_removed_version_number_is_never_reused(registry, onnx):
    # prepare
    registry.register("tiny", onnx)
    registry.register("tiny", onnx)
    registry.remove("tiny@2")

    # execute
    again = registry.register("tiny", onnx)

    # assert
    assert again.version == 3


# -- integrity -----------------------------------------------------------------------------------
def test_open_returns_the_bytes_and_detects_corruption(registry, onnx):
    # prepare
    m = registry.register("tiny", onnx)
    assert registry.open("tiny@1") == onnx.read_bytes()
    stored = pathlib.Path(registry.root) / "tiny" / "1" / "model.onnx"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    why = rf"tiny@1: registry file .*model\.onnx' has sha256 .* the manifest says {m.sha256[:16]}"

    # execute / assert
    with pytest.raises(CorruptArtifact, match=why + ".*register the model again"):
        registry.open("tiny@1")


def test_a_uri_goes_through_pyarrow(tmp_path, onnx):
    # prepare
    registry = Registry(f"file://{tmp_path}/by-uri")

    # execute
    m = registry.register("tiny", onnx)

    # assert
    assert registry.resolve("tiny@1") == m
    assert (tmp_path / "by-uri" / "tiny" / "1" / "model.onnx").exists()


def test_a_uint8_model_records_its_dtype(registry, tmp_path):
    # execute
    m = registry.register("u8", identity_model(tmp_path / "u8.onnx", shape=(4,), elem_type=UINT8))

    # assert
    assert m.inputs[0].describe() == "images uint8[4]"


# -- the command line ----------------------------------------------------------------------------
def cli(*args: str, registry) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "models", *args, "--registry", str(registry)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_cli_register_alias_list_show_rm(tmp_path, onnx):
    # prepare
    root = tmp_path / "registry"

    # execute
    reg = cli("register", "tiny", str(onnx), "--metrics", '{"mAP": 0.41}',
              "--produced-by", "run 17", registry=root)  # fmt: skip
    reg2 = cli("register", "tiny", str(onnx), "--parent", "1", registry=root)
    alias = cli("alias", "tiny", "stable", "1", registry=root)
    listed = cli("list", registry=root)
    versions = cli("list", "tiny", registry=root)
    shown = cli("show", "tiny@stable", "--json", registry=root)
    refused = cli("rm", "tiny@1", registry=root)
    removed = cli("rm", "tiny@2", registry=root)

    # assert
    assert reg.returncode == 0 and reg.stdout.startswith("registered tiny@1 (sha256 "), reg.stderr
    assert reg2.returncode == 0 and "tiny@2" in reg2.stdout
    assert alias.stdout.strip() == "tiny@stable -> tiny@1"
    assert "tiny" in listed.stdout and "stable->1" in listed.stdout and "1, 2" in listed.stdout
    assert "mAP=0.41" in versions.stdout and "run 17" in versions.stdout
    assert "images float32[1, 3, ?, ?]" in versions.stdout
    manifest = json.loads(shown.stdout)
    assert manifest["version"] == 1 and manifest["metrics"] == {"mAP": 0.41}
    assert refused.returncode == 1
    assert "cannot remove 'tiny@1': alias stable points at it" in refused.stderr
    assert removed.returncode == 0 and removed.stdout.startswith("removed tiny@2")


def test_cli_errors_say_how_to_fix(tmp_path):
    # prepare
    root = tmp_path / "registry"
    bogus = tmp_path / "x.onnx"
    bogus.write_text("nope")

    # execute
    bad_ref = cli("show", "tiny", registry=root)
    bad_file = cli("register", "tiny", str(bogus), registry=root)
    bad_metrics = cli("register", "tiny", str(bogus), "--metrics", "[1]", registry=root)

    # assert
    assert bad_ref.returncode == 1
    assert "edgeray models: error: model reference 'tiny' is not NAME@VERSION" in bad_ref.stderr
    assert "x.onnx' (4 bytes) is not an ONNX model" in bad_file.stderr
    assert "--metrics '[1]' is not a JSON object" in bad_metrics.stderr
