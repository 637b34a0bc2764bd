"""The node-local model cache and the resolver, and ObjectDetector with a registry reference."""

from __future__ import annotations

import hashlib
import multiprocessing
import pathlib
import time

import cv2
import pytest
from _onnx_files import identity_model

from models import CorruptArtifact, Manifest, ModelResolver, NodeCache, Registry, SignatureMismatch
from models.inference import ModelSignature
from operators import Context, OperatorError
from operators.detection import ObjectDetector
from pipelines.testing import ListSink, ListSource, Pipeline, run_local


def manifest(data: bytes, version: int = 1) -> Manifest:
    return Manifest("m", version, hashlib.sha256(data).hexdigest(), len(data), (), ())


class Fetcher:
    """Serves bytes by version and counts the fetches."""

    def __init__(self, blobs: dict[int, bytes]) -> None:
        self.blobs, self.calls = blobs, []

    def __call__(self, m: Manifest) -> bytes:
        self.calls.append(m.version)
        return self.blobs[m.version]


# -- NodeCache -----------------------------------------------------------------------------------
def test_fetches_once_and_serves_twice(tmp_path):
    # prepare
    data = b"model bytes"
    fetch = Fetcher({1: data})
    cache = NodeCache(tmp_path / "cache", budget_bytes=1000)

    # execute
    first = cache.path(manifest(data), fetch)
    second = cache.path(manifest(data), fetch)
    other_process = NodeCache(tmp_path / "cache", budget_bytes=1000).path(manifest(data), fetch)

    # assert
    assert fetch.calls == [1]
    assert first == second == other_process and first.read_bytes() == data


def test_evicts_the_least_recently_used_to_stay_under_the_budget(tmp_path):
    # prepare: three 40-byte artifacts, room for two
    blobs = {v: bytes([v]) * 40 for v in (1, 2, 3)}
    fetch = Fetcher(blobs)
    cache = NodeCache(tmp_path, budget_bytes=100)
    m1, m2, m3 = (manifest(blobs[v], v) for v in (1, 2, 3))
    cache.path(m1, fetch)
    cache.path(m2, fetch)
    cache.path(m1, fetch)  # 1 used again: 2 is now the least recently used

    # execute
    cache.path(m3, fetch)

    # assert
    assert cache.evicted == [m2.sha256]
    assert cache.cached() == [m1.sha256, m3.sha256]
    assert cache.used_bytes() == 80 <= cache.budget_bytes
    assert not (tmp_path / f"{m2.sha256}.onnx").exists()
    cache.path(m2, fetch)  # fetched again, evicting 1
    assert fetch.calls == [1, 2, 3, 2] and cache.cached() == [m3.sha256, m2.sha256]


def test_fetched_bytes_that_do_not_match_are_refused(tmp_path):
    # prepare
    cache = NodeCache(tmp_path, budget_bytes=1000)

    # execute / assert
    with pytest.raises(CorruptArtifact, match=r"m@1: the fetched artifact has sha256"):
        cache.path(manifest(b"good"), lambda m: b"evil")
    assert cache.used_bytes() == 0


def test_a_corrupted_cached_file_is_fetched_again(tmp_path):
    # prepare
    data = b"good bytes"
    fetch = Fetcher({1: data})
    cache = NodeCache(tmp_path, budget_bytes=1000)
    cache.path(manifest(data), fetch).write_bytes(b"bad bytes!")

    # execute
    path = cache.path(manifest(data), fetch)

    # assert
    assert fetch.calls == [1, 1] and path.read_bytes() == data


def test_an_artifact_bigger_than_the_budget_is_refused(tmp_path):
    # execute / assert
    with pytest.raises(Exception, match=r"m@1 is 20 bytes, more than the whole model cache budget"):
        NodeCache(tmp_path, budget_bytes=10).path(manifest(b"x" * 20), lambda m: b"x" * 20)


def _fetch_in_process(directory: str, data: bytes, log: str, start: float) -> None:
    def slow_fetch(m: Manifest) -> bytes:
        with open(log, "a") as f:
            f.write("fetch\n")
        time.sleep(0.3)
        return data

    time.sleep(max(0.0, start - time.time()))
    path = NodeCache(directory, budget_bytes=10_000).path(manifest(data), slow_fetch)
    assert path.read_bytes() == data


def test_two_processes_fetching_at_once_end_with_one_intact_file(tmp_path):
    # prepare
    data = bytes(range(256)) * 8
    log = tmp_path / "fetches.log"
    start = time.time() + 0.5
    ctx = multiprocessing.get_context("fork")
    args = (str(tmp_path / "cache"), data, str(log), start)
    procs = [ctx.Process(target=_fetch_in_process, args=args) for _ in range(2)]

    # execute
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)

    # assert
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text().count("fetch") == 1
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == [".lock", f"{manifest(data).sha256}.onnx", "index.json"]
    assert (tmp_path / "cache" / f"{manifest(data).sha256}.onnx").read_bytes() == data


# -- ModelResolver -------------------------------------------------------------------------------
@pytest.fixture
def resolver(tmp_path):
    cache = NodeCache(tmp_path / "cache", budget_bytes=2**20)
    return ModelResolver(Registry(tmp_path / "registry"), cache)


def test_resolver_opens_a_session_through_the_cache(resolver, tmp_path):
    # prepare
    resolver.registry.register("tiny", identity_model(tmp_path / "t.onnx", shape=(1, 4)))
    resolver.registry.alias("tiny", "stable", 1)
    sig = ModelSignature(input_name="images", shape=(1, 4))

    # execute
    manifest_, session = resolver.session("tiny@stable", sig)

    # assert
    assert manifest_.ref == "tiny@1"
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert resolver.cache.cached() == [manifest_.sha256]


def test_a_model_that_does_not_fit_the_signature_is_refused_before_fetching(resolver, tmp_path):
    # prepare
    resolver.registry.register("small", identity_model(tmp_path / "s.onnx", shape=(1, 3, 320, 320)))

    # execute / assert
    with pytest.raises(SignatureMismatch, match=r"small@1 .*\[1, 3, 320, 320\], expected 'images' "
                       r"float32\[1, 3, 416, 416\]"):  # fmt: skip
        resolver.session("small@1", ObjectDetector.signature)
    assert resolver.cache.used_bytes() == 0  # nothing fetched


def test_detector_refuses_a_mismatched_model_by_reference(resolver, tmp_path):
    # prepare
    resolver.registry.register("small", identity_model(tmp_path / "s.onnx", shape=(1, 3, 320, 320)))
    op = ObjectDetector(model="small@1")

    # execute / assert
    with pytest.raises(SignatureMismatch, match=r"small@1"):
        op.setup(Context(models=resolver))
    with pytest.raises(OperatorError, match=r"'small@1' is a registry reference but this context"):
        op.setup(Context())


# -- ObjectDetector through the local runner, on a real KITTI frame -------------------------------
def test_detector_by_stable_alias_through_the_local_runner(tmp_path, requires_data, monkeypatch):
    # prepare
    model = requires_data("detector-yolox-nano", "yolox_nano.onnx")
    kitti = requires_data("kitti-sample")
    registry = Registry(tmp_path / "registry")
    registry.register("yolox", model, produced_by="YOLOX-nano export")
    registry.alias("yolox", "stable", 1)
    monkeypatch.setenv("EDGERAY_MODEL_CACHE", str(tmp_path / "node-cache"))
    cv2.setNumThreads(1)
    image = cv2.imread(str(kitti / "image_2" / "000000.png"))
    p = Pipeline("detect", models=str(tmp_path / "registry"))
    p.source("camera", ListSource([{"image": image, "frame": 0}]), rate_hz=10)
    p.operator("detector", ObjectDetector(model="yolox@stable"), replicas=2)
    p.sink("out", ListSink())
    p.connect("camera", "detector.camera")
    p.connect("detector", "out")

    # execute
    run = run_local(p)

    # assert: the person on 000000 (as with the file path), one cached copy for both replicas
    [out] = run.sink("out")
    classes, scores = out.payload["classes"], out.payload["scores"]
    assert (classes == 0).any() and scores[classes == 0].max() == pytest.approx(0.8, abs=0.05)
    assert [h.op.manifest.ref for h in run.hosts["detector"]] == ["yolox@1", "yolox@1"]
    cached = sorted(pathlib.Path(tmp_path / "node-cache").glob("*.onnx"))
    assert [c.stem for c in cached] == [registry.resolve("yolox@stable").sha256]
