"""The model registry: versioned ONNX artifacts with manifests, and aliases that point at them.

A reference has one syntax everywhere: ``NAME@VERSION`` or ``NAME@ALIAS``.

>>> ModelRef.parse("detector@3")
ModelRef(name='detector', version=3, alias=None)
>>> str(ModelRef.parse("detector@stable"))
'detector@stable'
>>> ModelRef.parse("detector")  # doctest: +ELLIPSIS
Traceback (most recent call last):
  ...
models._errors.BadModelRef: model reference 'detector' is not NAME@VERSION or NAME@ALIAS; e.g. ...

``Registry(root)`` stores artifacts through a ``pyarrow.fs`` filesystem: a local
directory for a plain path, any URI pyarrow supports (``s3://``, ``gs://``,
``hdfs://``) for a real fleet. The layout::

    <root>/<name>/<version>/model.onnx       the bytes, as registered
    <root>/<name>/<version>/manifest.json    written last: a version exists once it has one
    <root>/<name>/aliases.json               {"stable": 2, "canary": 3}

Files are written to a temporary name and moved into place where the filesystem
can rename (a local directory); object stores put whole objects anyway. On a
local directory, writers of one model serialise on a lock file
(``<root>/<name>/.lock``); on an object store keep one writer per model (a CI
job, a training run). A removed version leaves a ``removed.json`` tombstone so
its number is never reused: ``detector@3`` always names the same bytes.

>>> import tempfile
>>> Registry(tempfile.mkdtemp()).names()
[]
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import pathlib
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models._errors import (
    AliasInUse,
    BadModelRef,
    CorruptArtifact,
    ModelNotFound,
    NotAnOnnxModel,
    RegistryError,
)
from models.inference import _ORT_DTYPES, model_file

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
ALIASES_FILE = "aliases.json"
TOMBSTONE_FILE = "removed.json"
#: Where the registry is when neither a pipeline nor the command line says.
ENV_VAR = "EDGERAY_MODELS"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_EXAMPLE = "e.g. 'detector@3' (a version) or 'detector@stable' (an alias)"


def default_root() -> str:
    """``$EDGERAY_MODELS``, else ``${XDG_DATA_HOME:-~/.local/share}/edgeray/models``."""
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return os.path.join(data, "edgeray", "models")


def check_name(name: str, *, what: str = "model name") -> str:
    """``name`` if it is a valid model or alias name, else ``BadModelRef`` saying why.

    >>> check_name("yolox-nano_v2.1")
    'yolox-nano_v2.1'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadModelRef(
            f"{what} {name!r} is not valid: use letters, digits, '.', '_' and '-', starting "
            f"with a letter or digit (no '@' or '/'); {_EXAMPLE}"
        )
    return name


@dataclass(frozen=True)
class ModelRef:
    """``NAME@VERSION`` (``version`` set) or ``NAME@ALIAS`` (``alias`` set)."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str | ModelRef) -> ModelRef:
        """The reference ``text`` names; ``BadModelRef`` with an example for anything else."""
        if isinstance(text, ModelRef):
            return text
        name, at, target = str(text).partition("@")
        if not at or not name or not target or "@" in target:
            raise BadModelRef(
                f"model reference {str(text)!r} is not NAME@VERSION or NAME@ALIAS; {_EXAMPLE}",
                ref=str(text),
            )
        check_name(name)
        if target.isdigit():
            if int(target) < 1:
                raise BadModelRef(
                    f"model reference {text!r}: versions start at 1; {_EXAMPLE}", ref=str(text)
                )
            return cls(name, version=int(target))
        return cls(name, alias=check_name(target, what=f"alias in {text!r}"))

    @staticmethod
    def looks_like(text: str) -> bool:
        """Whether ``text`` reads as a reference rather than a file path (``NAME@...``, no '/')."""
        return "@" in text and "/" not in text and os.sep not in text

    def __str__(self) -> str:
        return f"{self.name}@{self.version if self.version is not None else self.alias}"


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, shape (``None`` for a dynamic dimension), dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    @property
    def type(self) -> str:  # what ModelSignature.check reads (ONNX Runtime's NodeArg.type)
        return self.dtype

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.dtype}[{dims}]"


@dataclass(frozen=True)
class Manifest:
    """What the registry knows of one version: identity, bytes, tensors, lineage.

    ``inputs`` / ``outputs`` are read from the ONNX file with ONNX Runtime at
    registration. ``parent`` is the version this one was derived from (fine-tuned,
    aggregated); ``produced_by`` says in words what produced it (a training run, a
    federated round). ``created_at`` is ISO 8601 UTC.

    >>> m = Manifest("d", 1, "ab" * 32, 10, (TensorSpec("images", (1, None), "float32"),), ())
    >>> Manifest.from_json(m.to_json()) == m, m.ref
    (True, 'd@1')
    """

    name: str
    version: int
    sha256: str
    size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metrics: Mapping[str, float] = field(default_factory=dict)
    parent: int | None = None
    produced_by: str = ""
    created_at: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    # ONNX Runtime's session interface, so ModelSignature.check(manifest) works before a fetch.
    def get_inputs(self) -> tuple[TensorSpec, ...]:
        return self.inputs

    def get_outputs(self) -> tuple[TensorSpec, ...]:
        return self.outputs

    def to_json(self) -> str:
        body = {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "inputs": [_tensor_json(t) for t in self.inputs],
            "outputs": [_tensor_json(t) for t in self.outputs],
            "metrics": dict(self.metrics),
            "parent": self.parent,
            "produced_by": self.produced_by,
            "created_at": self.created_at,
        }
        return json.dumps(body, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        d = json.loads(text)
        return cls(
            name=d["name"],
            version=int(d["version"]),
            sha256=d["sha256"],
            size=int(d["size"]),
            inputs=tuple(_tensor(t) for t in d["inputs"]),
            outputs=tuple(_tensor(t) for t in d["outputs"]),
            metrics=dict(d.get("metrics") or {}),
            parent=d.get("parent"),
            produced_by=d.get("produced_by", ""),
            created_at=d.get("created_at", ""),
        )


def _tensor_json(t: TensorSpec) -> dict[str, Any]:
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}


def _tensor(d: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(d["name"], tuple(d["shape"]), d["dtype"])


def inspect_onnx(data: bytes, *, source: str) -> tuple[tuple[TensorSpec, ...], ...]:
    """``(inputs, outputs)`` of an ONNX model's bytes, read by ONNX Runtime on the CPU.

    Raises ``NotAnOnnxModel`` naming ``source`` when ONNX Runtime cannot load them.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(
            data, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # ORT raises its own pybind classes (InvalidProtobuf, Fail, ...)
        raise NotAnOnnxModel(
            f"{source} ({len(data)} bytes) is not an ONNX model ONNX Runtime can load: "
            f"{type(err).__name__}: {str(err).strip()[:200]}; register a complete .onnx export "
            "(not a checkpoint, an archive or a partial download)",
            path=source,
        ) from err

    def specs(args: Sequence[Any]) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(
                a.name,
                tuple(d if isinstance(d, int) else None for d in a.shape),
                _ORT_DTYPES.get(a.type, a.type),
            )
            for a in args
        )

    return specs(session.get_inputs()), specs(session.get_outputs())


class Registry:
    """Versioned model artifacts under ``root`` (a local path or a pyarrow filesystem URI).

    ``now`` (seconds since the epoch) stamps ``created_at``; inject it in tests.
    Constructing a registry touches nothing: directories appear on the first write.
    """

    def __init__(self, root: str | os.PathLike, *, now: Callable[[], float] = time.time) -> None:
        import pyarrow.fs

        text = os.fspath(root)
        if "://" in text:
            self.fs, path = pyarrow.fs.FileSystem.from_uri(text)
        else:
            self.fs, path = pyarrow.fs.LocalFileSystem(), str(pathlib.Path(text).expanduser())
            path = os.path.abspath(path)
        self.root = text
        self._path = path.rstrip("/")
        self._local = self.fs.type_name == "local"
        self._now = now

    def __repr__(self) -> str:
        return f"Registry({self.root!r})"

    # -- reading ---------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every model with at least one version, sorted."""
        return sorted(
            info.base_name
            for info in self._list(self._path)
            if info.type == _dir() and self._version_numbers(info.base_name, live_only=True)
        )

    def versions(self, name: str) -> list[Manifest]:
        """The manifests of ``name``'s versions, oldest first (``[]`` for an unknown name)."""
        return [self._manifest(name, v) for v in self._version_numbers(check_name(name))]

    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version}`` of ``name``."""
        path = f"{self._model_dir(check_name(name))}/{ALIASES_FILE}"
        if self.fs.get_file_info(path).type != _file():
            return {}
        return {str(k): int(v) for k, v in json.loads(self._read(path)).items()}

    def resolve(self, ref: str | ModelRef) -> Manifest:
        """The manifest ``ref`` names; ``ModelNotFound`` saying what exists when none."""
        r = ModelRef.parse(ref)
        version = r.version
        if r.alias is not None:
            aliases = self.aliases(r.name)
            if r.alias not in aliases:
                have = ", ".join(f"{a}->{v}" for a, v in sorted(aliases.items())) or "none"
                raise ModelNotFound(
                    f"model {r.name!r} has no alias {r.alias!r} in registry {self.root!r} "
                    f"(its aliases: {have}); set one with `edgeray models alias {r.name} "
                    f"{r.alias} VERSION`",
                    ref=str(r),
                )
            version = aliases[r.alias]
        assert version is not None
        if version not in self._version_numbers(r.name):
            have = ", ".join(map(str, self._version_numbers(r.name))) or "none"
            raise ModelNotFound(
                f"model {str(r)!r} not found in registry {self.root!r} (versions of "
                f"{r.name!r}: {have}; models: {', '.join(self.names()) or 'none'}); register "
                f"one with `edgeray models register {r.name} FILE.onnx`",
                ref=str(r),
            )
        return self._manifest(r.name, version)

    def open(self, ref: str | ModelRef | Manifest) -> bytes:
        """The bytes of a version, checked against its manifest's sha256."""
        manifest = ref if isinstance(ref, Manifest) else self.resolve(ref)
        path = f"{self._version_dir(manifest.name, manifest.version)}/{MODEL_FILE}"
        data = self._read(path)
        verify(data, manifest, where=f"registry file {path!r}")
        return data

    # -- writing ---------------------------------------------------------------------
    def register(
        self,
        name: str,
        model: str | os.PathLike | bytes,
        *,
        metrics: Mapping[str, float] | None = None,
        parent: int | None = None,
        produced_by: str = "",
    ) -> Manifest:
        """Store a new version of ``name`` (the next integer) from a file or bytes.

        Refuses bytes ONNX Runtime cannot load (``NotAnOnnxModel``, naming the file)
        and a ``parent`` that is not a version of ``name`` (``ModelNotFound``).
        """
        check_name(name)
        if isinstance(model, bytes | bytearray):
            data, source = bytes(model), f"the bytes given for model {name!r}"
        else:
            file = model_file(model)
            data, source = file.read_bytes(), f"model file {str(file)!r}"
        inputs, outputs = inspect_onnx(data, source=source)
        clean_metrics = _metrics(metrics, name=name)
        with self._locked(name):
            numbers = self._version_numbers(name, live_only=False)
            if parent is not None and parent not in self._version_numbers(name):
                raise ModelNotFound(
                    f"parent version {parent} of {name!r} is not in registry {self.root!r} "
                    f"(versions: {', '.join(map(str, self._version_numbers(name))) or 'none'}); "
                    "pass --parent with an existing version, or leave it out",
                    ref=f"{name}@{parent}",
                )
            version = max(numbers, default=0) + 1
            stamp = datetime.datetime.fromtimestamp(self._now(), datetime.UTC)
            manifest = Manifest(
                name=name,
                version=version,
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                inputs=inputs,
                outputs=outputs,
                metrics=clean_metrics,
                parent=parent,
                produced_by=produced_by,
                created_at=stamp.isoformat(timespec="seconds").replace("+00:00", "Z"),
            )
            directory = self._version_dir(name, version)
            self.fs.create_dir(directory, recursive=True)
            self._write(f"{directory}/{MODEL_FILE}", data)
            self._write(f"{directory}/{MANIFEST_FILE}", manifest.to_json().encode())
        return manifest

    def alias(self, name: str, alias: str, version: int) -> None:
        """Point ``name@alias`` at ``version`` (moving it if it pointed elsewhere)."""
        check_name(alias, what="alias")
        if alias.isdigit():
            raise BadModelRef(
                f"alias {alias!r} of {name!r} is all digits, so '{name}@{alias}' would read as a "
                "version; choose a name such as 'stable' or 'canary'",
                ref=f"{name}@{alias}",
            )
        with self._locked(name):
            self.resolve(ModelRef(name, version=int(version)))  # exists, or ModelNotFound
            aliases = self.aliases(name) | {alias: int(version)}
            body = json.dumps(dict(sorted(aliases.items())), indent=2).encode()
            self._write(f"{self._model_dir(name)}/{ALIASES_FILE}", body)

    def remove(self, ref: str | ModelRef) -> Manifest:
        """Delete a version; refused (``AliasInUse``) while an alias points at it."""
        manifest = self.resolve(ref)
        name, version = manifest.name, manifest.version
        with self._locked(name):
            pointing = sorted(a for a, v in self.aliases(name).items() if v == version)
            if pointing:
                raise AliasInUse(
                    f"cannot remove {manifest.ref!r}: alias {', '.join(pointing)} points at it; "
                    f"move the alias first (`edgeray models alias {name} {pointing[0]} "
                    "OTHER_VERSION`)",
                    ref=manifest.ref,
                )
            directory = self._version_dir(name, version)
            self.fs.delete_file(f"{directory}/{MANIFEST_FILE}")  # the version is gone from here
            self.fs.delete_file(f"{directory}/{MODEL_FILE}")
            tomb = json.dumps({"removed": manifest.ref, "sha256": manifest.sha256}).encode()
            self._write(f"{directory}/{TOMBSTONE_FILE}", tomb)
        return manifest

    # -- internals -------------------------------------------------------------------
    def _model_dir(self, name: str) -> str:
        return f"{self._path}/{name}"

    def _version_dir(self, name: str, version: int) -> str:
        return f"{self._path}/{name}/{version}"

    def _manifest(self, name: str, version: int) -> Manifest:
        return Manifest.from_json(self._read(f"{self._version_dir(name, version)}/{MANIFEST_FILE}"))

    def _list(self, path: str) -> list[Any]:
        import pyarrow.fs

        if self.fs.get_file_info(path).type != _dir():
            return []
        return self.fs.get_file_info(pyarrow.fs.FileSelector(path))

    def _version_numbers(self, name: str, *, live_only: bool = True) -> list[int]:
        """Version numbers of ``name``: with a manifest (``live_only``) or ever used."""
        numbers = []
        for info in self._list(self._model_dir(name)):
            if info.type != _dir() or not info.base_name.isdigit():
                continue
            if live_only:
                manifest = f"{info.path}/{MANIFEST_FILE}"
                if self.fs.get_file_info(manifest).type != _file():
                    continue
            numbers.append(int(info.base_name))
        return sorted(numbers)

    def _read(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def _write(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path``: via a temporary file and a rename where that is atomic."""
        target = path if not self._local else f"{path}.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(target) as f:
            f.write(data)
        if self._local:
            os.replace(target, path)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Serialise writers of one model (a lock file on a local directory; none elsewhere)."""
        if not self._local:
            yield
            return
        import fcntl

        directory = pathlib.Path(self._model_dir(name))
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def verify(data: bytes, manifest: Manifest, *, where: str) -> None:
    """Raise ``CorruptArtifact`` unless ``data`` is ``manifest``'s bytes (sha256)."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.sha256:
        raise CorruptArtifact(
            f"{manifest.ref}: {where} has sha256 {digest[:16]}... ({len(data)} bytes), the "
            f"manifest says {manifest.sha256[:16]}... ({manifest.size} bytes); the artifact is "
            f"corrupt or was replaced: register the model again (a new version) and remove "
            f"{manifest.ref}",
            ref=manifest.ref,
        )


def _metrics(metrics: Mapping[str, float] | None, *, name: str) -> dict[str, float]:
    out = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RegistryError(
                f"metric {key!r} of model {name!r} is {value!r}; metrics are numbers, "
                'e.g. {"mAP": 0.41, "latency_ms": 12.5}',
                ref=name,
            )
        out[str(key)] = float(value)
    return out


def _dir() -> Any:
    import pyarrow.fs

    return pyarrow.fs.FileType.Directory


def _file() -> Any:
    import pyarrow.fs

    return pyarrow.fs.FileType.File
