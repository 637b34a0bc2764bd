"""models.inference: providers, opening sessions, model signatures (no Ray)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from _onnx_files import UINT8, identity_model

from models.inference import (
    CPU,
    CUDA,
    ModelSignature,
    NotAnOnnxModel,
    SignatureMismatch,
    open_session,
    providers_for_this_machine,
)


def test_cuda_only_when_a_gpu_is_visible():
    # prepare
    listed = ("TensorrtExecutionProvider", CUDA, CPU)

    # execute / assert
    assert providers_for_this_machine(available=listed, gpu_visible=False) == (CPU,)
    assert providers_for_this_machine(available=listed, gpu_visible=True) == (CUDA, CPU)
    assert providers_for_this_machine(available=(CPU,), gpu_visible=True) == (CPU,)


def test_hidden_gpus_mean_cpu(monkeypatch):
    # prepare
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")

    # execute / assert
    assert providers_for_this_machine(available=(CUDA, CPU)) == (CPU,)


def test_opening_a_session_prints_no_cuda_error_on_this_machine(tmp_path):
    # prepare: a fresh interpreter, so ORT's own stderr is captured
    model = identity_model(tmp_path / "id.onnx", shape=(1, 3, 8, 8))
    code = (
        "from models.inference import open_session;"
        f"s = open_session({str(model)!r});"
        "print(s.get_providers())"
    )

    # execute
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    # assert: whatever the machine, no failed CUDA attempt is logged
    assert "CUDA" not in done.stderr or "CUDAExecutionProvider" in done.stdout, done.stderr


def test_open_session_runs_with_pinned_threads(tmp_path):
    # prepare
    model = identity_model(tmp_path / "id.onnx", shape=(1, 3, 8, 8))

    # execute
    session = open_session(model, intra_op_threads=1, providers=(CPU,))
    (out,) = session.run(None, {"images": np.ones((1, 3, 8, 8), np.float32)})

    # assert
    assert out.shape == (1, 3, 8, 8) and session.get_providers() == [CPU]


def test_a_file_that_is_not_onnx_is_named(tmp_path):
    # prepare
    bogus = tmp_path / "weights.onnx"
    bogus.write_bytes(b"PK\x03\x04 this is a zip, not a model")

    # execute / assert
    with pytest.raises(NotAnOnnxModel, match=r"weights\.onnx.*is not an ONNX model"):
        open_session(bogus)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(NotAnOnnxModel, match=r"nothere\.onnx.*does not exist"):
        open_session(tmp_path / "nothere.onnx")


def test_signature_accepts_a_fitting_model_and_dynamic_dims(tmp_path):
    # prepare
    fixed = open_session(identity_model(tmp_path / "a.onnx", shape=(1, 3, 416, 416)))
    dynamic = open_session(identity_model(tmp_path / "b.onnx", shape=(None, 3, None, None)))
    signature = ModelSignature("images", (1, 3, 416, 416), "float32", "output", (1, 3, None, None))

    # execute / assert: no exception
    signature.check(fixed)
    signature.check(dynamic)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (1, 3, 320, 320)}, r"shape \[1, 3, 320, 320\], expected 'images' float32"),
        ({"name": "input"}, r"has no input 'images' \(its inputs: 'input'"),
        ({"elem_type": UINT8}, r"input 'images' is uint8\[1, 3, 416, 416\], expected"),
    ],
)
def test_signature_refuses_a_model_that_does_not_fit(tmp_path, kwargs, message):
    # prepare
    path = tmp_path / "other.onnx"
    session = open_session(identity_model(path, **{"shape": (1, 3, 416, 416), **kwargs}))
    signature = ModelSignature("images", (1, 3, 416, 416), "float32")

    # execute / assert
    with pytest.raises(SignatureMismatch, match=message) as err:
        signature.check(session, model=path)
    assert "other.onnx" in str(err.value)


def test_signature_checks_the_output_when_declared(tmp_path):
    # prepare
    session = open_session(identity_model(tmp_path / "a.onnx", shape=(1, 3, 416, 416)))
    signature = ModelSignature("images", (1, 3, 416, 416), "float32", "output", (1, None, 85))

    # execute / assert
    expected = r"expected an output 'output' of shape \[1, \?, 85\]"
    with pytest.raises(SignatureMismatch, match=expected):
        signature.check(session)


def test_models_does_not_import_ray():
    code = "import models.inference, sys; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
