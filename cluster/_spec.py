"""Fleet specs: one TOML file names the nodes of a fleet, their labels, sizes and links.

Pure data, no Ray. ``load_spec(path)`` reads a file, ``parse_spec(text, path)`` a string;
both return a frozen :class:`FleetSpec` or raise one :class:`FleetSpecError` naming the
file, the node and the field, and saying how to fix it.

Labels follow DESIGN.md: one key per fact (``edge.role``, ``edge.zone``, ``edge.accel``),
one boolean key per sensor (``edge.sensor.camera = "true"``), and ``edge.node`` = the node's
name, added here so runtime code can name nodes. Keys and values are checked against Ray's
own label syntax (``ray/_private/label_utils.py`` in Ray 2.60: Kubernetes label rules, keys
under ``ray.io/`` reserved).

>>> spec = parse_spec('''
... [fleet]
... name = "tiny"
... [[nodes]]
... name = "car-1"
... role = "vehicle"
... sensors = ["camera"]
... num_cpus = 1
... memory = "1GiB"
... object_store_memory = "100MB"
... resources = { camera = 1 }
... ''', "tiny.toml")
>>> spec.nodes[0].labels["edge.sensor.camera"], spec.nodes[0].labels["edge.node"]
('true', 'car-1')
>>> spec.nodes[0].memory
1073741824
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cluster._errors import FleetSpecError

# Ray 2.60, ray/_private/label_utils.py: a label name or value is 63 characters at most,
# begins and ends with an alphanumeric, with `-`, `_`, `.` and alphanumerics between; a key
# may carry a DNS-subdomain prefix before `/`; `ray.io/` is reserved for Ray's own labels.
_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?"
_LABEL_RE = re.compile(_LABEL)
_PREFIX_RE = re.compile(rf"({_LABEL})?(\.({_LABEL})?)*")
_RESERVED_PREFIX = "ray.io/"
_RESOURCE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_BUILTIN_RESOURCES = {"CPU", "GPU", "memory", "object_store_memory"}

HEAD_NAME = "head"

_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}

_EMPTY: Mapping = MappingProxyType({})


@dataclass(frozen=True)
class Geo:
    lat: float
    lon: float


@dataclass(frozen=True)
class HeadSpec:
    """The head node: dashboard, GCS; by default it runs no operators (``num_cpus = 0``)."""

    dashboard_port: int = 8265
    num_cpus: float = 0.0
    memory: int = 512 * 2**20
    object_store_memory: int = 100 * 10**6


@dataclass(frozen=True)
class NodeSpec:
    name: str
    labels: Mapping[str, str]
    num_cpus: float
    memory: int
    object_store_memory: int
    resources: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    geo: Geo | None = None

    @property
    def role(self) -> str:
        return self.labels["edge.role"]


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    latency_ms: float
    bandwidth_mbps: float
    loss: float = 0.0


@dataclass(frozen=True)
class FleetSpec:
    name: str
    nodes: tuple[NodeSpec, ...]
    links: tuple[Link, ...] = ()
    head: HeadSpec = field(default_factory=HeadSpec)
    path: str = "<string>"

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes)
        raise FleetSpecError(
            self.path, f"no node named {name!r}; the fleet has: {known}", node=name
        )

    def roles(self) -> dict[str, list[NodeSpec]]:
        """Nodes grouped by ``edge.role``, in spec order."""
        out: dict[str, list[NodeSpec]] = {}
        for n in self.nodes:
            out.setdefault(n.role, []).append(n)
        return out


# ---------------------------------------------------------------------------- parsing

_FLEET_FIELDS = {"name": 'the fleet\'s name, e.g. name = "local"'}
_HEAD_FIELDS = {"dashboard_port", "num_cpus", "memory", "object_store_memory"}
_NODE_REQUIRED = {"name", "role", "num_cpus", "memory", "object_store_memory"}
_NODE_OPTIONAL = {"zone", "accel", "sensors", "labels", "resources", "geo"}
_LINK_REQUIRED = {"a", "b", "latency_ms", "bandwidth_mbps"}
_LINK_OPTIONAL = {"loss"}
_TOP = {"fleet", "head", "nodes", "links"}

_NODE_EXAMPLE = """\
  [[nodes]]
  name = "vehicle-1"
  role = "vehicle"
  zone = "north"
  sensors = ["camera", "lidar"]
  num_cpus = 1
  memory = "1.5GiB"
  object_store_memory = "200MB"
  resources = { camera = 1 }
  geo = { lat = 48.137, lon = 11.575 }"""


def load_spec(path: str | Path) -> FleetSpec:
    """Read and check a fleet spec file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise FleetSpecError(
            str(p), "no such file; pass a fleet spec such as cluster/fleets/local.toml"
        ) from None
    return parse_spec(text, str(p))


def default_spec_path() -> Path:
    """The shipped single-machine fleet, ``cluster/fleets/local.toml``."""
    return Path(__file__).parent / "fleets" / "local.toml"


def parse_spec(text: str, path: str = "<string>") -> FleetSpec:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise FleetSpecError(path, f"not valid TOML ({e}); fix the syntax there") from None
    _unknown(path, doc, _TOP, None, "top-level table")
    fleet = _table(path, doc, "fleet", None, required=True)
    _unknown(path, fleet, set(_FLEET_FIELDS), None, "[fleet]")
    name = _str(path, fleet, "name", None, required=True)
    _check_label_value(path, None, "fleet.name", name)
    head = _head(path, _table(path, doc, "head", None, required=False))
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise FleetSpecError(
            path,
            "a fleet needs at least one node; add a [[nodes]] table like:\n" + _NODE_EXAMPLE,
            field="nodes",
        )
    nodes: list[NodeSpec] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_nodes):
        node = _node(path, i, raw)
        if node.name in seen:
            raise FleetSpecError(
                path,
                f"duplicate node name (nodes #{seen[node.name] + 1} and #{i + 1}); "
                "node names must be unique: rename one",
                node=node.name,
                field="name",
            )
        seen[node.name] = i
        nodes.append(node)
    links = tuple(_link(path, i, raw, seen) for i, raw in enumerate(doc.get("links", [])))
    return FleetSpec(name=name, nodes=tuple(nodes), links=links, head=head, path=path)


def _head(path: str, raw: dict) -> HeadSpec:
    _unknown(path, raw, _HEAD_FIELDS, HEAD_NAME, "[head]")
    d = HeadSpec()
    port = raw.get("dashboard_port", d.dashboard_port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise FleetSpecError(
            path,
            f"expected a TCP port 0..65535, got {port!r}",
            node=HEAD_NAME,
            field="dashboard_port",
        )
    return HeadSpec(
        dashboard_port=port,
        num_cpus=_whole(path, raw, "num_cpus", HEAD_NAME, default=d.num_cpus),
        memory=_size(path, raw, "memory", HEAD_NAME, default=d.memory),
        object_store_memory=_size(
            path, raw, "object_store_memory", HEAD_NAME, default=d.object_store_memory
        ),
    )


def _node(path: str, index: int, raw: Any) -> NodeSpec:
    if not isinstance(raw, dict):
        raise FleetSpecError(path, f"nodes #{index + 1} must be a [[nodes]] table")
    label = raw.get("name") if isinstance(raw.get("name"), str) else f"#{index + 1}"
    _unknown(path, raw, _NODE_REQUIRED | _NODE_OPTIONAL, label, "a node")
    for key in sorted(_NODE_REQUIRED):
        if key not in raw:
            raise FleetSpecError(
                path,
                f"missing required field {key!r}; every node needs "
                f"{', '.join(sorted(_NODE_REQUIRED))}, e.g.\n{_NODE_EXAMPLE}",
                node=label,
                field=key,
            )
    name = _str(path, raw, "name", label, required=True)
    _check_label_value(path, label, "name", name)
    if name == HEAD_NAME:
        raise FleetSpecError(
            path,
            f"{HEAD_NAME!r} is the head node's name; choose another",
            node=name,
            field="name",
        )
    labels = {"edge.node": name, "edge.role": _str(path, raw, "role", name, required=True)}
    for key in ("zone", "accel"):
        if key in raw:
            labels[f"edge.{key}"] = _str(path, raw, key, name, required=True)
    sensors = raw.get("sensors", [])
    if not isinstance(sensors, list) or not all(isinstance(s, str) for s in sensors):
        raise FleetSpecError(
            path,
            f'expected a list of sensor names like ["camera", "lidar"], got {sensors!r}',
            node=name,
            field="sensors",
        )
    for s in sensors:
        labels[f"edge.sensor.{s}"] = "true"
    extra = _table(path, raw, "labels", name, required=False)
    for key, value in extra.items():
        if key in labels:
            raise FleetSpecError(
                path,
                f"label {key!r} is set by the node's own fields (name, role, zone, accel, "
                "sensors); set it there instead",
                node=name,
                field=f"labels.{key}",
            )
        if not isinstance(value, str):
            raise FleetSpecError(
                path,
                f'label values are strings; write {key!r} = "{value}"',
                node=name,
                field=f"labels.{key}",
            )
        labels[key] = value
    for key, value in labels.items():
        where = {"edge.node": "name", "edge.role": "role", "edge.zone": "zone"}.get(key)
        where = where or ("accel" if key == "edge.accel" else None)
        where = where or ("sensors" if key.startswith("edge.sensor.") else f"labels.{key}")
        _check_label_key(path, name, where, key)
        _check_label_value(path, name, where, value)
    resources = _table(path, raw, "resources", name, required=False)
    res: dict[str, float] = {}
    for key in resources:
        if key in _BUILTIN_RESOURCES or not _RESOURCE_RE.fullmatch(key):
            raise FleetSpecError(
                path,
                f"{key!r} is not a custom resource name (CPU, GPU, memory, object_store_memory"
                " have fields of their own; custom names are letters, digits, _ . -)",
                node=name,
                field=f"resources.{key}",
            )
        res[key] = _whole(path, resources, key, name, default=None, field_name=f"resources.{key}")
    geo = None
    if "geo" in raw:
        g = _table(path, raw, "geo", name, required=True)
        _unknown(path, g, {"lat", "lon"}, name, "geo", prefix="geo.")
        lat = _number(path, g, "lat", name, default=None, field_name="geo.lat", lo=-90, hi=90)
        lon = _number(path, g, "lon", name, default=None, field_name="geo.lon", lo=-180, hi=180)
        geo = Geo(lat, lon)
    num_cpus = _whole(path, raw, "num_cpus", name, default=None)
    return NodeSpec(
        name=name,
        labels=MappingProxyType(labels),
        num_cpus=num_cpus,
        memory=_size(path, raw, "memory", name, default=None),
        object_store_memory=_size(path, raw, "object_store_memory", name, default=None),
        resources=MappingProxyType(res),
        geo=geo,
    )


def _link(path: str, index: int, raw: Any, nodes: Mapping[str, int]) -> Link:
    where = f"link #{index + 1}"
    if not isinstance(raw, dict):
        raise FleetSpecError(path, f"{where} must be a [[links]] table")
    _unknown(path, raw, _LINK_REQUIRED | _LINK_OPTIONAL, None, where, prefix=f"links[{index}].")
    for key in sorted(_LINK_REQUIRED):
        if key not in raw:
            raise FleetSpecError(
                path,
                f"{where} is missing {key!r}; a link needs a, b, latency_ms, bandwidth_mbps "
                '(loss optional), e.g. { a = "vehicle-1", b = "rsu-1", latency_ms = 5, '
                "bandwidth_mbps = 100, loss = 0.001 }",
                field=f"links[{index}].{key}",
            )
    ends = []
    for key in ("a", "b"):
        end = _str(path, raw, key, None, required=True, field_name=f"links[{index}].{key}")
        if end not in nodes and end != HEAD_NAME:
            raise FleetSpecError(
                path,
                f"{where} names unknown node {end!r}; known nodes: "
                f"{', '.join([HEAD_NAME, *nodes])}",
                node=end,
                field=f"links[{index}].{key}",
            )
        ends.append(end)
    f = f"links[{index}]."
    return Link(
        a=ends[0],
        b=ends[1],
        latency_ms=_number(
            path, raw, "latency_ms", None, default=None, field_name=f + "latency_ms"
        ),
        bandwidth_mbps=_number(
            path, raw, "bandwidth_mbps", None, default=None, field_name=f + "bandwidth_mbps"
        ),
        loss=_number(path, raw, "loss", None, default=0.0, field_name=f + "loss", hi=1.0),
    )


# ---------------------------------------------------------------------------- field helpers


def _unknown(
    path: str, raw: dict, known: set[str], node: str | None, what: str, prefix: str = ""
) -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise FleetSpecError(
                path,
                f"unknown field in {what}; {hint}known fields: {', '.join(sorted(known))}",
                node=node,
                field=prefix + key,
            )


def _table(path: str, raw: dict, key: str, node: str | None, *, required: bool) -> dict:
    if key not in raw:
        if required:
            raise FleetSpecError(
                path, f'missing [{key}] table, e.g.\n  [{key}]\n  name = "local"', field=key
            )
        return {}
    value = raw[key]
    if not isinstance(value, dict):
        raise FleetSpecError(path, f"expected a table, got {value!r}", node=node, field=key)
    return value


def _str(
    path: str, raw: dict, key: str, node: str | None, *, required: bool, field_name: str = ""
) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or (required and not value):
        raise FleetSpecError(
            path,
            f"expected a non-empty string, got {value!r}",
            node=node,
            field=field_name or key,
        )
    return value


def _whole(path: str, raw: dict, key: str, node: str | None, **kw) -> float:
    """A node's resource quantity: Ray 2.60 refuses to start a node with a fractional one
    ("Resource quantities must all be whole numbers"); tasks and actors may ask for fractions.
    """
    value = _number(path, raw, key, node, **kw)
    if not float(value).is_integer():
        raise FleetSpecError(
            path,
            f"{value:g} is not a whole number; Ray gives a node whole units of each resource "
            "(an actor may still ask for a fraction, e.g. num_cpus=0.5): write "
            f"{int(value) or 1}",
            node=node,
            field=kw.get("field_name") or key,
        )
    return value


def _number(
    path: str,
    raw: dict,
    key: str,
    node: str | None,
    *,
    default: float | None,
    field_name: str = "",
    lo: float = 0.0,
    hi: float | None = None,
) -> float:
    if key not in raw:
        if default is None:
            raise FleetSpecError(
                path, "missing required number", node=node, field=field_name or key
            )
        return default
    value = raw[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise FleetSpecError(
            path, f"expected a number {rng}, got {value!r}", node=node, field=field_name or key
        )
    return float(value)


def parse_size(value: Any) -> int:
    """Bytes from an int or a string such as ``"200MB"``, ``"1.5GiB"``.

    >>> parse_size("1.5GiB"), parse_size("200MB"), parse_size(1024)
    (1610612736, 200000000, 1024)
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        if m:
            return int(float(m.group(1)) * _UNITS[(m.group(2) or "B").lower()])
    raise ValueError(value)


def _size(path: str, raw: dict, key: str, node: str | None, *, default: int | None) -> int:
    if key not in raw:
        if default is None:
            raise FleetSpecError(path, "missing required size", node=node, field=key)
        return default
    try:
        return parse_size(raw[key])
    except ValueError:
        raise FleetSpecError(
            path,
            f'expected a size in bytes or a string like "200MB" / "1.5GiB", got {raw[key]!r}',
            node=node,
            field=key,
        ) from None


def _check_label_key(path: str, node: str, where: str, key: str) -> None:
    problem = None
    if key.startswith(_RESERVED_PREFIX):
        problem = f"label key {key!r} is under {_RESERVED_PREFIX!r}, which Ray reserves"
    else:
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not _PREFIX_RE.fullmatch(prefix)):
            problem = f"label key prefix {prefix!r} is not a DNS subdomain"
        elif not _LABEL_RE.fullmatch(name):
            problem = f"label key {key!r} is not a valid Ray label name"
    if problem:
        raise FleetSpecError(
            path,
            f"{problem}: Ray labels are at most 63 characters, begin and end with a letter or "
            "digit, with - _ . between (an optional DNS prefix before '/'); rename it, e.g. "
            "'edge.site'",
            node=node,
            field=where,
        )


def _check_label_value(path: str, node: str | None, where: str, value: str) -> None:
    if value and not _LABEL_RE.fullmatch(value):
        raise FleetSpecError(
            path,
            f"{value!r} cannot be a Ray label value: at most 63 characters, beginning and "
            "ending with a letter or digit, with - _ . between (no spaces, commas, '=' or "
            "'/'); e.g. 'vehicle-1'",
            node=node,
            field=where,
        )


def describe(spec: FleetSpec) -> Sequence[str]:
    """One line per node, for logs and ``edgeray up``."""
    return [
        f"{n.name}: {n.num_cpus:g} CPU, {', '.join(f'{k}={v}' for k, v in n.labels.items())}"
        for n in spec.nodes
    ]
