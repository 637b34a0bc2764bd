"""Messages as Arrow records: lossless for numpy payloads of any shape and dtype.

One row per message. Identity, times and meta are plain columns; each payload
(and truth) field becomes a column ``payload.<name>`` (``truth.<name>``):
Python scalars as native Arrow types, numpy arrays and numpy scalars as a
struct ``{data: binary, dtype: string, shape: list<int64>, scalar: bool}``
(``dtype`` in numpy's ``descr`` form, so structured dtypes survive).
``payload_keys`` keeps which fields a message had, so a ``None`` value and a
missing field stay apart when messages with different payloads share a table.

>>> import numpy as np
>>> m = Message(source="s", seq=1, event_ts=5, payload={"img": np.zeros((2, 3), np.uint16)})
>>> back = table_to_messages(messages_to_table([m]))[0]
>>> back.payload["img"].dtype, back.payload["img"].shape
(dtype('uint16'), (2, 3))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from operators._errors import PayloadConversionError
from operators._message import Lineage, Message, Meta
from operators._qos import QoS

TENSOR = pa.struct(
    [
        ("data", pa.binary()),
        ("dtype", pa.string()),
        ("shape", pa.list_(pa.int64())),
        ("scalar", pa.bool_()),
    ]
)
LINEAGE = pa.list_(pa.struct([("source", pa.string()), ("seq", pa.int64()), ("part", pa.int64())]))
_SCALARS = (bool, int, float, str, bytes)
_HINT = (
    "use a numpy array of a fixed dtype, or a bool / int / float / str / bytes / None, "
    "or a list of those (flatten nested dicts into keys such as 'box.x')"
)


def _encode_tensor(name: str, value: np.ndarray | np.generic) -> dict[str, Any]:
    array = np.asarray(value)
    if array.dtype.hasobject:
        raise PayloadConversionError(name, value, hint=_HINT)
    return {
        "data": np.ascontiguousarray(array).tobytes(),
        "dtype": repr(np.lib.format.dtype_to_descr(array.dtype)),
        "shape": list(array.shape),
        "scalar": isinstance(value, np.generic),
    }


def _decode_tensor(cell: Mapping[str, Any]) -> np.ndarray | np.generic:
    import ast

    dtype = np.lib.format.descr_to_dtype(ast.literal_eval(cell["dtype"]))
    array = np.frombuffer(cell["data"], dtype=dtype).reshape(cell["shape"])
    return array[()] if cell["scalar"] else array


def _encode_value(name: str, value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return _encode_tensor(name, value)
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, _SCALARS) for v in value):
        return list(value)
    raise PayloadConversionError(name, value, hint=_HINT)


def _field_array(name: str, values: list[Any], raw: list[Any]) -> pa.Array:
    tensor = any(isinstance(v, dict) for v in values)
    try:
        return pa.array(values, type=TENSOR if tensor else None)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as err:
        sample = next(v for v in raw if v is not None)
        kinds = sorted({type(v).__name__ for v in raw if v is not None})
        hint = _HINT
        if len(kinds) > 1:
            hint = f"messages disagree on its type ({', '.join(kinds)}); use one type throughout"
        raise PayloadConversionError(name, sample, hint=f"{hint} ({err})") from err


def messages_to_table(messages: Iterable[Message]) -> pa.Table:
    """Messages to one Arrow table (fields missing from a message are null)."""
    messages = list(messages)
    columns: dict[str, Any] = {
        "source": pa.array([m.source for m in messages], pa.string()),
        "seq": pa.array([m.seq for m in messages], pa.int64()),
        "part": pa.array([m.part for m in messages], pa.int64()),
        "event_ts": pa.array([m.event_ts for m in messages], pa.int64()),
        "ingest_ts": pa.array([m.ingest_ts for m in messages], pa.int64()),
        "producer": pa.array([m.meta.producer for m in messages], pa.string()),
        "version": pa.array([m.meta.version for m in messages], pa.string()),
        "qos": pa.array([int(m.meta.qos) for m in messages], pa.int8()),
        "lineage": pa.array(
            [[vars(x) for x in m.meta.lineage] for m in messages],
            LINEAGE,
        ),
    }
    for section in ("payload", "truth"):
        rows = [getattr(m, section) for m in messages]
        columns[f"{section}_keys"] = pa.array(
            [None if r is None else list(r) for r in rows], pa.list_(pa.string())
        )
        names = list(dict.fromkeys(k for r in rows if r for k in r))
        for name in names:
            where = f"{section}.{name}"
            raw = [None if r is None else r.get(name) for r in rows]
            values = [None if v is None else _encode_value(where, v) for v in raw]
            columns[where] = _field_array(where, values, raw)
    return pa.table(columns)


def _decode_section(row: Mapping[str, Any], section: str) -> dict[str, Any] | None:
    keys = row[f"{section}_keys"]
    if keys is None:
        return None
    out = {}
    for name in keys:
        cell = row[f"{section}.{name}"]
        is_tensor = isinstance(cell, dict) and set(cell) == set(TENSOR.names)
        out[name] = _decode_tensor(cell) if is_tensor else cell
    return out


def table_to_messages(table: pa.Table) -> list[Message]:
    """The inverse of ``messages_to_table``."""
    messages = []
    for row in table.to_pylist():
        meta = Meta(
            producer=row["producer"],
            version=row["version"],
            qos=QoS(row["qos"]),
            lineage=tuple(Lineage(**x) for x in row["lineage"]),
        )
        messages.append(
            Message(
                source=row["source"],
                seq=row["seq"],
                part=row["part"],
                event_ts=row["event_ts"],
                ingest_ts=row["ingest_ts"],
                payload=_decode_section(row, "payload") or {},
                meta=meta,
                truth=_decode_section(row, "truth"),
            )
        )
    return messages
