"""Messages as Arrow records: ``messages_to_table`` → ``table_to_messages`` is lossless.

Every case goes through an in-memory table and through a real Parquet file.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from operators import (
    Lineage,
    Message,
    Meta,
    PayloadConversionError,
    QoS,
    messages_to_table,
    table_to_messages,
)

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError:  # pragma: no cover - hypothesis lives in the test extra
    given = None


# -- helpers ---------------------------------------------------------------------------
def roundtrip(messages: list[Message], tmp_path: pathlib.Path | None = None) -> list[Message]:
    table = messages_to_table(messages)
    if tmp_path is None:
        return table_to_messages(table)
    path = tmp_path / "messages.parquet"
    pq.write_table(table, path)
    return table_to_messages(pq.read_table(path))


def assert_same_value(got: Any, want: Any, where: str) -> None:
    """Equal value *and* type: dtype, shape, byte content (NaN-safe), scalar-ness."""
    if isinstance(want, np.ndarray | np.generic):
        assert type(got) is type(want), f"{where}: {type(got)} != {type(want)}"
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
        assert np.shape(got) == np.shape(want), f"{where}: shape {np.shape(got)}"
        got_bytes = np.ascontiguousarray(got).tobytes()
        assert got_bytes == np.ascontiguousarray(want).tobytes(), f"{where}: content differs"
    elif isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got), f"{where}: {got!r}"
    else:
        assert type(got) is type(want), f"{where}: {type(got)} != {type(want)}"
        assert got == want, f"{where}: {got!r} != {want!r}"


def assert_same_section(got: Mapping | None, want: Mapping | None, where: str) -> None:
    if want is None:
        assert got is None, f"{where}: expected None, got {got!r}"
        return
    assert got is not None, f"{where}: lost"
    assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
    for name in want:
        assert_same_value(got[name], want[name], f"{where}.{name}")


def assert_same_message(got: Message, want: Message) -> None:
    assert (got.source, got.seq, got.part) == (want.source, want.seq, want.part)
    assert (got.event_ts, got.ingest_ts) == (want.event_ts, want.ingest_ts)
    assert got.meta == want.meta
    assert type(got.meta.qos) is QoS
    assert_same_section(got.payload, want.payload, "payload")
    assert_same_section(got.truth, want.truth, "truth")


@pytest.fixture(params=["memory", "parquet"])
def through(request, tmp_path):
    """Round trip through an in-memory table, or through a Parquet file on disk."""
    return lambda messages: roundtrip(messages, None if request.param == "memory" else tmp_path)


def message(payload: Mapping[str, Any], **kw: Any) -> Message:
    return Message(source="cam@vehicle-1", seq=kw.pop("seq", 3), event_ts=1_000, **kw,
                   payload=payload)  # fmt: skip


# -- numpy arrays of many shapes and dtypes ----------------------------------------------
DTYPES = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
    "datetime64[ns]", "datetime64[D]", "timedelta64[ms]", "<U7", "S5",
    ">i4", ">f8", ">c16",
]  # fmt: skip
SHAPES = [(), (1,), (5,), (2, 3), (2, 3, 4, 5), (0,), (3, 0, 2)]


def sample_array(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    n = math.prod(shape)
    base = np.arange(n, dtype=np.int64) * 37 + 5
    dt = np.dtype(dtype)
    if dt.kind == "b":
        values = base % 2 == 1
    elif dt.kind in "US":
        values = np.array([f"v{i}"[: dt.itemsize] for i in base], dtype=dt)
    elif dt.kind in "Mm":
        values = base.astype(dt)
    elif dt.kind == "c":
        values = base + 1j * base[::-1]
    else:
        values = base
    return np.asarray(values).astype(dt).reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_array_roundtrip_keeps_dtype_shape_and_bytes(through, dtype, shape):
    # prepare
    array = sample_array(dtype, shape)
    want = message({"x": array})

    # execute
    [got] = through([want])

    # assert
    assert_same_message(got, want)


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.asfortranarray(np.arange(24, dtype=np.int32).reshape(2, 3, 4)), id="F"),
        pytest.param(np.arange(40, dtype=np.float64)[::3], id="strided"),
        pytest.param(np.arange(60, dtype=np.uint16).reshape(6, 10)[1:5:2, ::-3], id="sliced"),
        pytest.param(np.arange(12, dtype=">i8").reshape(3, 4).T, id="big-endian-T"),
        pytest.param(np.broadcast_to(np.arange(3, dtype=np.int8), (4, 3)), id="broadcast"),
    ],
)
def test_non_contiguous_arrays_come_back_equal_and_contiguous(through, array):
    # prepare
    assert not array.flags.c_contiguous
    want = message({"x": array})

    # execute
    [got] = through([want])

    # assert
    assert_same_message(got, want)
    np.testing.assert_array_equal(got.payload["x"], array)
    assert got.payload["x"].flags.c_contiguous


def test_big_endian_keeps_its_byte_order(through):
    # prepare
    array = np.array([1, 256, -2], dtype=">i4")

    # execute
    [got] = through([message({"x": array})])

    # assert
    assert got.payload["x"].dtype.byteorder == ">"
    assert got.payload["x"].tolist() == [1, 256, -2]


def test_structured_dtype_survives(through):
    # prepare
    dtype = np.dtype(
        [("xy", "<f4", (2,)), ("id", ">u8"), ("label", "U4"), ("inner", [("a", "i1"), ("b", "?")])]
    )
    array = np.zeros(3, dtype=dtype)
    array["xy"] = [[1.5, 2.5], [3, 4], [5, 6]]
    array["id"] = [7, 8, 2**63]
    array["label"] = ["car", "bus", "ped"]
    array["inner"]["a"] = [-1, 0, 1]
    array["inner"]["b"] = [True, False, True]
    aligned = np.zeros(2, dtype=np.dtype([("a", "u1"), ("b", "<f8")], align=True))
    aligned["b"] = [0.5, -0.5]
    want = message({"boxes": array, "aligned": aligned})

    # execute
    [got] = through([want])

    # assert
    assert_same_message(got, want)
    assert got.payload["boxes"]["label"].tolist() == ["car", "bus", "ped"]
    assert got.payload["boxes"]["id"][2] == 2**63
    assert got.payload["aligned"].dtype == aligned.dtype
    assert got.payload["aligned"]["b"].tolist() == [0.5, -0.5]


def test_arrays_come_back_read_only(through):
    # prepare: the contract says arrays arrive read-only (copy before drawing on them)
    want = message({"img": np.zeros((2, 2, 3), np.uint8)})

    # execute
    [got] = through([want])

    # assert
    with pytest.raises(ValueError, match="read-only"):
        got.payload["img"][0, 0, 0] = 1


# -- scalars, None, lists ----------------------------------------------------------------
NUMPY_SCALARS = [
    np.bool_(True), np.int8(-8), np.int16(-16), np.int32(-32), np.int64(-(2**63)),
    np.uint8(255), np.uint16(65535), np.uint32(2**32 - 1), np.uint64(2**64 - 1),
    np.float16(0.5), np.float32(1.25), np.float64(-2.5), np.complex64(1 - 2j),
    np.complex128(3 + 4j), np.datetime64("2024-05-01T12:00:00.123456789", "ns"),
    np.datetime64("2024-05-01", "D"), np.timedelta64(7, "ms"), np.str_("hello"),
    np.bytes_(b"\x00\x01"), np.float64("nan"),
]  # fmt: skip


@pytest.mark.parametrize("value", NUMPY_SCALARS, ids=lambda v: f"{type(v).__name__}")
def test_numpy_scalar_stays_a_numpy_scalar_of_its_dtype(through, value):
    # prepare
    want = message({"v": value})

    # execute
    [got] = through([want])

    # assert
    assert_same_message(got, want)
    assert not isinstance(got.payload["v"], np.ndarray)


PYTHON_VALUES = [
    True, False, 0, -(2**63), 2**63 - 1, 1.5, float("inf"), float("nan"), "", "héllo",
    b"", b"\x00\xff", None, [1, 2, 3], [0.5, -1.0], ["a", "b"], [True, False], [b"x"], [],
]  # fmt: skip


@pytest.mark.parametrize("value", PYTHON_VALUES, ids=repr)
def test_python_scalars_none_and_lists_come_back_as_themselves(through, value):
    # prepare
    want = message({"v": value})

    # execute
    [got] = through([want])

    # assert
    assert_same_message(got, want)


def test_none_value_and_missing_field_stay_apart(through):
    # prepare: a None field, a missing field, and an empty payload in one table
    messages = [
        message({"score": None, "img": np.ones(2, np.uint8)}, seq=0),
        message({"img": np.ones(2, np.uint8)}, seq=1),
        message({}, seq=2),
    ]

    # execute
    got = through(messages)

    # assert
    assert [list(m.payload) for m in got] == [["score", "img"], ["img"], []]
    assert got[0].payload["score"] is None
    for g, w in zip(got, messages, strict=True):
        assert_same_message(g, w)


def test_messages_with_different_payload_keys_share_one_table(through):
    # prepare
    messages = [
        message({"img": np.zeros((2, 3, 3), np.uint8), "n": 1}, seq=0),
        message({"lidar": np.ones((5, 4), np.float32)}, seq=1),
        message({"n": 2, "label": "car"}, seq=2),
        message({"img": np.zeros((4, 1, 3), np.uint8), "lidar": np.zeros((0, 4), np.float32)},
                seq=3),
    ]  # fmt: skip

    # execute
    table = messages_to_table(messages)
    got = through(messages)

    # assert
    assert {"payload.img", "payload.n", "payload.lidar", "payload.label"} <= set(table.column_names)
    assert len(got) == 4
    for g, w in zip(got, messages, strict=True):
        assert_same_message(g, w)


def test_same_field_with_arrays_of_different_dtypes_and_shapes(through):
    # prepare
    messages = [
        message({"x": np.arange(3, dtype=np.int8)}, seq=0),
        message({"x": np.ones((2, 2), dtype=np.float64)}, seq=1),
        message({"x": np.float32(7)}, seq=2),
        message({"x": None}, seq=3),
    ]

    # execute
    got = through(messages)

    # assert
    for g, w in zip(got, messages, strict=True):
        assert_same_message(g, w)


# -- truth, meta, lineage, qos -------------------------------------------------------------
def test_truth_present_absent_and_empty_stay_apart(through):
    # prepare
    messages = [
        message({"x": 1}, seq=0, truth={"boxes": np.ones((2, 4), np.float32), "cls": [1, 2]}),
        message({"x": 2}, seq=1),
        message({"x": 3}, seq=2, truth={}),
    ]

    # execute
    got = through(messages)

    # assert
    assert got[0].truth is not None and got[1].truth is None and got[2].truth == {}
    for g, w in zip(got, messages, strict=True):
        assert_same_message(g, w)


def test_identity_times_meta_lineage_and_qos_are_preserved(through):
    # prepare
    meta = Meta(
        producer="detector",
        version="3",
        qos=QoS.EMERGENCY,
        lineage=(Lineage("lidar@vehicle-1", 9, 0), Lineage("radar@vehicle-1", 4, 65537)),
    )
    want = Message(
        source="cam@vehicle-1", seq=2**40, part=65536 * 3 + 2, event_ts=-5,
        ingest_ts=1_715_000_000_123_456_789, payload={"n": 1}, meta=meta,
    )  # fmt: skip

    # execute
    [got] = through([want])

    # assert
    assert got == want


@pytest.mark.parametrize("qos", list(QoS))
def test_every_qos_class_roundtrips(through, qos):
    # execute
    [got] = through([message({}).with_qos(qos)])

    # assert
    assert got.qos is qos


def test_empty_list_of_messages(through):
    # execute
    table = messages_to_table([])
    got = through([])

    # assert
    assert table.num_rows == 0
    assert got == []


def test_parquet_file_keeps_many_messages_in_order(tmp_path):
    # prepare
    rng = np.random.default_rng(0)
    messages = [
        Message(
            source=f"cam-{i % 3}", seq=i, event_ts=i * 33_333_333, ingest_ts=10 + i,
            payload={"img": rng.integers(0, 255, (4, 6, 3), dtype=np.uint8),
                     "boxes": rng.random((i, 4)).astype(np.float32), "n": i},
            truth={"labels": rng.integers(0, 9, i).astype(np.int16)},
        )
        for i in range(20)
    ]  # fmt: skip
    path = tmp_path / "run.parquet"

    # execute
    pq.write_table(messages_to_table(messages), path)
    got = table_to_messages(pq.read_table(path))

    # assert
    assert [m.seq for m in got] == list(range(20))
    for g, w in zip(got, messages, strict=True):
        assert_same_message(g, w)


# -- what cannot be converted -------------------------------------------------------------
class Opaque:
    pass


@pytest.mark.parametrize(
    ("payload", "field", "kind"),
    [
        ({"boxes": {"x": 1, "y": 2}}, "payload.boxes", "dict"),
        ({"ids": {1, 2}}, "payload.ids", "set"),
        ({"thing": Opaque()}, "payload.thing", "Opaque"),
        ({"objs": np.array([1, "a", None], dtype=object)}, "payload.objs", "ndarray"),
        ({"rec": np.zeros(2, dtype=[("o", object)])}, "payload.rec", "ndarray"),
        ({"nested": [[1, 2], [3]]}, "payload.nested", "list"),
        ({"mixed": [1, object()]}, "payload.mixed", "list"),
        ({"huge": 2**64}, "payload.huge", "int"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_unconvertible_payload_names_the_field(payload, field, kind):
    # prepare
    messages = [message({"ok": np.zeros(2)}), message(payload)]

    # execute / assert
    with pytest.raises(PayloadConversionError) as info:
        messages_to_table(messages)
    text = str(info.value)
    assert text.startswith(f"payload field {field!r} holds a {kind}, which cannot be converted")
    assert "use a numpy array of a fixed dtype" in text
    assert info.value.field == field


def test_unconvertible_truth_names_the_truth_field():
    # execute / assert
    with pytest.raises(PayloadConversionError, match=r"payload field 'truth\.meta' holds a dict"):
        messages_to_table([message({}, truth={"meta": {"weather": "rain"}})])


def test_nested_dict_error_says_how_to_flatten():
    # execute / assert
    with pytest.raises(PayloadConversionError, match=r"flatten nested dicts into keys such as"):
        messages_to_table([message({"box": {"x": 1}})])


@pytest.mark.parametrize(
    ("first", "second", "kinds"),
    [
        (np.zeros(2), 3, "int, ndarray"),
        (True, 1, "bool, int"),
        (1, "a", "int, str"),
    ],
)
def test_field_whose_type_differs_between_messages_names_both_types(first, second, kinds):
    # prepare
    messages = [message({"v": first}, seq=0), message({"v": second}, seq=1)]

    # execute / assert
    with pytest.raises(PayloadConversionError) as info:
        messages_to_table(messages)
    assert str(info.value).startswith("payload field 'payload.v' holds a ")
    assert f"messages disagree on its type ({kinds}); use one type throughout" in str(info.value)


# -- property: any fixed-dtype array round-trips ---------------------------------------------
if given is not None:

    def _dtypes():
        return (
            hnp.boolean_dtypes()
            | hnp.integer_dtypes(endianness="=")
            | hnp.integer_dtypes(endianness=">")
            | hnp.unsigned_integer_dtypes(endianness="?")
            | hnp.floating_dtypes(endianness="?")
            | hnp.complex_number_dtypes(endianness="?")
            | hnp.datetime64_dtypes(endianness="?")
            | hnp.timedelta64_dtypes(endianness="?")
            | hnp.unicode_string_dtypes(min_len=1)
            | hnp.byte_string_dtypes(min_len=1)
            | hnp.array_dtypes(subtype_strategy=hnp.scalar_dtypes(), min_size=1, max_size=3)
        )

    arrays = _dtypes().flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    )

    @settings(max_examples=150, deadline=None)
    @given(
        payload=st.dictionaries(st.text(min_size=1, max_size=8), arrays, max_size=3),
        order=st.sampled_from(["C", "F"]),
    )
    def test_any_fixed_dtype_array_roundtrips(payload, order):
        # prepare
        payload = {k: np.asarray(v, order=order) for k, v in payload.items()}
        want = message(payload)

        # execute
        [got] = roundtrip([want])

        # assert
        assert_same_message(got, want)

else:  # pragma: no cover

    @pytest.mark.skip(reason="hypothesis is not installed (pip install hypothesis)")
    def test_any_fixed_dtype_array_roundtrips():
        pass
