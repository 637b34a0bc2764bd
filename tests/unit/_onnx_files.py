"""Write tiny ONNX models for tests without the ``onnx`` package (hand-encoded protobuf).

``identity_model(path, shape=(1, 3, 320, 320))`` writes a one-node model
(``Identity``) whose input ``name`` has the given shape (``None``: a dynamic
dimension) and element type, so tests can hand operators a real model that
does not fit their signature.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

#: ONNX TensorProto element types.
FLOAT, UINT8, INT32 = 1, 2, 6


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, shape: Sequence[int | None], elem_type: int) -> bytes:
    dims = b"".join(
        _bytes(1, _bytes(2, f"d{i}") if d is None else _int(1, d)) for i, d in enumerate(shape)
    )
    tensor = _int(1, elem_type) + _bytes(2, dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor))


def identity_model(
    path: pathlib.Path,
    *,
    name: str = "images",
    shape: Sequence[int | None] = (1, 3, 320, 320),
    elem_type: int = FLOAT,
) -> pathlib.Path:
    """Write an Identity model ``name -> output`` to ``path``; returns ``path``."""
    node = _bytes(1, name) + _bytes(2, "output") + _bytes(4, "Identity")
    graph = (
        _bytes(1, node)
        + _bytes(2, "identity")
        + _bytes(11, _value_info(name, shape, elem_type))
        + _bytes(12, _value_info("output", shape, elem_type))
    )
    model = _int(1, 7) + _bytes(7, graph) + _bytes(8, _int(2, 13))
    path.write_bytes(model)
    return path
