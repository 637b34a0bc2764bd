"""Inference sessions: which execution providers a node really has, opening an ONNX
model with pinned threads, and the model signature an operator needs.

``providers_for_this_machine()`` asks for CUDA only when the node can really use
it: ONNX Runtime's CUDA provider is built in *and* an NVIDIA device is visible.
``onnxruntime-gpu`` lists CUDA among its available providers even on a machine
without a GPU, and asking for it there prints a loud error before falling back,
so the list alone decides nothing.

``ModelSignature`` is what an operator declares it needs (input name, shape with
``None`` for a dimension of any size, dtype, and optionally the output's); its
``check(session)`` refuses a model that does not fit, so a rollout can reject a
model before any replica switches to it.

>>> sig = ModelSignature(input_name="images", shape=(1, 3, None, None), dtype="float32")
>>> sig.accepts_shape((1, 3, 416, 416)), sig.accepts_shape((1, 1, 416, 416))
(True, False)
>>> no_gpu = providers_for_this_machine(available=("CUDAExecutionProvider",
...     "CPUExecutionProvider"), gpu_visible=False)
>>> no_gpu
('CPUExecutionProvider',)

Errors (``ModelError``, ``NotAnOnnxModel``, ``SignatureMismatch``) live in
``models/_errors.py``, drawn in its tree under ``EdgerayError``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models._errors import NotAnOnnxModel, SignatureMismatch

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

#: ONNX Runtime's tensor type names → numpy dtype names.
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


# -- providers ------------------------------------------------------------------------------------
def nvidia_device_visible() -> bool:
    """Whether an NVIDIA GPU is visible to this process (device node, else ``nvidia-smi -L``).

    ``CUDA_VISIBLE_DEVICES`` set to ``""`` or ``-1`` hides every GPU.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if pathlib.Path("/dev/nvidia0").exists():
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and b"GPU" in done.stdout


def providers_for_this_machine(
    *, available: Sequence[str] | None = None, gpu_visible: bool | None = None
) -> tuple[str, ...]:
    """The execution providers to ask for here: ``(CUDA, CPU)`` when a GPU is usable, else CPU.

    ``available`` defaults to ``onnxruntime.get_available_providers()`` and
    ``gpu_visible`` to ``nvidia_device_visible()``; pass them to decide for
    another node (or in tests). TensorRT is never chosen automatically.
    """
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    if CUDA in available and (nvidia_device_visible() if gpu_visible is None else gpu_visible):
        return (CUDA, CPU)
    return (CPU,)


# -- sessions -------------------------------------------------------------------------------------
def model_file(path: str | os.PathLike) -> pathlib.Path:
    """``path`` as a file that exists, else ``NotAnOnnxModel`` naming it and how to fix it."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise NotAnOnnxModel(
            f"model file {str(file)!r} does not exist (or is not a file); pass the path of an "
            "ONNX model (e.g. .../detector-yolox-nano/yolox_nano.onnx)",
            path=file,
        )
    return file


def open_session(
    path: str | os.PathLike,
    *,
    intra_op_threads: int = 1,
    providers: Sequence[str] | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` on ``path`` with pinned threads.

    ``intra_op_threads`` threads inside an operator, one between operators
    (sequential execution). ``providers`` defaults to
    ``providers_for_this_machine()``. Raises ``NotAnOnnxModel`` naming the file
    when it is missing or ONNX Runtime cannot load it.
    """
    import onnxruntime

    file = model_file(path)
    if intra_op_threads < 1:
        raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    chosen = list(providers_for_this_machine() if providers is None else providers)
    try:
        return onnxruntime.InferenceSession(str(file), sess_options=options, providers=chosen)
    except Exception as err:  # ORT raises its own pybind classes (InvalidProtobuf, Fail, ...)
        size = file.stat().st_size
        raise NotAnOnnxModel(
            f"model file {str(file)!r} ({size} bytes) is not an ONNX model ONNX Runtime can "
            f"load: {type(err).__name__}: {str(err).strip()[:300]}; check that the file is a "
            "complete .onnx export (not a checkpoint, an archive or a partial download)",
            path=file,
        ) from err


# -- signatures -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSignature:
    """What an operator needs of a model: its input (and optionally output) tensor.

    ``shape`` uses ``None`` for a dimension of any size. A model whose own
    dimension is symbolic (dynamic) fits any size asked for. ``preprocessing``
    says in words how the operator fills the input (for manifests and errors).
    ``output_name`` / ``output_shape`` are checked only when given.
    """

    input_name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    output_name: str | None = None
    output_shape: tuple[int | None, ...] | None = None
    preprocessing: str = ""

    def accepts_shape(self, shape: Sequence[int | str | None]) -> bool:
        """Whether a tensor shape (ints, or ``None`` / names for dynamic dims) fits ``shape``."""
        return _fits(self.shape, shape)

    def check(self, session: Any, *, model: str | os.PathLike | None = None) -> None:
        """Raise ``SignatureMismatch`` unless ``session``'s model fits this signature.

        ``session`` is anything with ONNX Runtime's ``get_inputs()`` /
        ``get_outputs()``; ``model`` names the file in the message.
        """
        where = f"model {str(model)!r}" if model is not None else "the model"
        inputs = {i.name: i for i in session.get_inputs()}
        got = inputs.get(self.input_name)
        if got is None:
            raise SignatureMismatch(
                f"{where} has no input {self.input_name!r} (its inputs: "
                f"{_describe(session.get_inputs())}); expected {self._want()}; "
                "use a model exported with that input name",
                path=model,
            )
        dtype = _ORT_DTYPES.get(got.type, got.type)
        if dtype not in _ORT_DTYPES.values() or np.dtype(self.dtype) != np.dtype(dtype):
            raise SignatureMismatch(
                f"{where} input {self.input_name!r} is {dtype}{_shape(got.shape)}, "
                f"expected {self._want()}; re-export the model with a {self.dtype} input",
                path=model,
            )
        if not _fits(self.shape, got.shape):
            raise SignatureMismatch(
                f"{where} input {self.input_name!r} has shape {_shape(got.shape)}, expected "
                f"{self._want()}; use a model exported for that input size",
                path=model,
            )
        if self.output_name is None:
            return
        outputs = {o.name: o for o in session.get_outputs()}
        out = outputs.get(self.output_name)
        shape = self.output_shape
        if out is None or (shape is not None and not _fits(shape, out.shape)):
            raise SignatureMismatch(
                f"{where} outputs are {_describe(session.get_outputs())}, expected an output "
                f"{self.output_name!r} of shape {_shape(self.output_shape or ())}; the "
                "operator's post-processing reads that layout",
                path=model,
            )

    def _want(self) -> str:
        return f"{self.input_name!r} {self.dtype}{_shape(self.shape)}"


def _fits(want: Sequence[int | None], got: Sequence[int | str | None]) -> bool:
    if len(want) != len(got):
        return False
    for w, g in zip(want, got, strict=True):
        if w is None or not isinstance(g, int):  # any size asked, or a dynamic model dim
            continue
        if w != g:
            return False
    return True


def _shape(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _describe(tensors: Sequence[Any]) -> str:
    return ", ".join(
        f"{t.name!r} {_ORT_DTYPES.get(t.type, t.type)}{_shape(t.shape)}" for t in tensors
    )
