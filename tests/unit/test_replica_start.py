"""How a rollout starts a replacement replica (pipelines._replica_start), without Ray: the boot
hold on a parent's new children, the niceness checks, the warm-up on a model signature."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.inference import ModelSignature, open_session
from pipelines import _replica_start
from pipelines._replica_start import (
    HELD_NICE,
    BootHold,
    can_lower_niceness,
    signature_input,
    warm_model,
)

SIGNATURE = ModelSignature(input_name="x", shape=(None, 4), dtype="float32")


def write_model(path, *, fails_at_run: bool):
    """``x`` float32[N, 4] -> ``y``: the input itself, or a Gather whose index (computed from
    the input, so only known when it runs) is out of bounds: loads fine, fails on any input."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if fails_at_run:
        consts = [numpy_helper.from_array(np.zeros(2, np.float32), "data"),
                  numpy_helper.from_array(np.array(5.0, np.float32), "five")]  # fmt: skip
        nodes = [
            helper.make_node("ReduceSum", ["x"], ["sum"], keepdims=0),
            helper.make_node("Mul", ["sum", "five"], ["zero_or_more"]),
            helper.make_node("Add", ["zero_or_more", "five"], ["index_f"]),
            helper.make_node("Cast", ["index_f"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["data", "index"], ["y"]),
        ]
    else:
        consts, nodes = [], [helper.make_node("Identity", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "m", [x], [y], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


class ModelUser:
    """An operator-like object holding one ONNX Runtime session, as ``setup`` leaves it."""

    signature = SIGNATURE

    def __init__(self, path) -> None:
        self._session = open_session(path)


def test_signature_input_fills_dynamic_dimensions_with_one():
    tensor = signature_input(ModelSignature(input_name="i", shape=(None, 3, 8, None),
                                            dtype="uint8"))  # fmt: skip
    assert tensor.shape == (1, 3, 8, 1) and tensor.dtype == np.uint8 and not tensor.any()


def test_warm_model_runs_every_session_once_on_the_signature_input(tmp_path):
    assert warm_model(ModelUser(write_model(tmp_path / "ok.onnx", fails_at_run=False))) == 1
    assert warm_model(object()) == 0  # no declared signature: nothing to run


def test_warm_model_fails_where_the_model_cannot_run(tmp_path):
    user = ModelUser(write_model(tmp_path / "bad.onnx", fails_at_run=True))
    with pytest.raises(Exception, match=r"(?i)out of bounds|invalid"):
        warm_model(user)


def test_boot_hold_lowers_the_children_started_while_it_holds_and_only_them():
    before = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    hold = BootHold(raylet=os.getpid())
    try:
        outcome = hold.start(timeout_s=30)
        if not outcome.held:
            pytest.skip(outcome.why)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            deadline = time.monotonic() + 10
            while child.pid not in hold.held_pids and time.monotonic() < deadline:
                time.sleep(0.01)  # polling the hold's record, not standing in for it
            assert hold.release() == [child.pid]
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == HELD_NICE
            assert os.getpriority(os.PRIO_PROCESS, before.pid) == outcome.restore_to
        finally:
            child.kill()
            child.wait()
    finally:
        hold.release()
        before.kill()
        before.wait()


def test_no_hold_where_the_niceness_could_not_be_lowered_again(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(_replica_start, "_has_cap_sys_nice", lambda: False)
    monkeypatch.setattr(resource, "getrlimit", lambda _: (0, 0))
    allowed, why = can_lower_niceness(15)
    assert not allowed
    assert "needs CAP_SYS_NICE or RLIMIT_NICE >= 5 (here 0)" in why and "ulimit -e 5" in why
    hold = BootHold(raylet=os.getpid()).start(timeout_s=1)  # back to this process's niceness
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    assert not hold.held and hold.why == can_lower_niceness(nice)[1]


def test_a_held_process_returns_to_the_niceness_it_is_given():
    if not can_lower_niceness(5)[0]:
        pytest.skip(can_lower_niceness(5)[1])
    code = (
        "import os; os.nice(19 - os.nice(0)); "
        "from pipelines._replica_start import set_niceness; print(set_niceness(5))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "5"
