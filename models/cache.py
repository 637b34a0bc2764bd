"""The node-local model cache, and the resolver operators use to open a referenced model.

``NodeCache(directory, budget_bytes=...)`` keeps artifacts as
``<directory>/<sha256>.onnx``: each version is fetched once per node, checked
against its manifest's sha256, and served to every replica on the node. The total
stays under the byte budget; ``cachetools.LRUCache`` decides what goes (the least
recently used first). Several replica processes share one directory: a
``fcntl.flock`` on ``<directory>/.lock`` is held around fetch and eviction, files
are written to a temporary name and ``os.replace``-d into place, and the recency
order lives in ``<directory>/index.json`` so every process sees the same one.

>>> import tempfile
>>> from models.registry import Manifest
>>> cache = NodeCache(tempfile.mkdtemp(), budget_bytes=1024)
>>> m = Manifest("d", 1, hashlib.sha256(b"xyz").hexdigest(), 3, (), ())
>>> cache.path(m, lambda manifest: b"xyz").read_bytes()
b'xyz'
>>> cache.path(m, lambda manifest: b"never fetched again").read_bytes(), cache.used_bytes()
(b'xyz', 3)

``ModelResolver(registry, cache).session("detector@stable", signature)`` resolves a
reference, refuses a model whose manifest does not fit the signature before
fetching anything, fetches through the cache, opens an ONNX Runtime session and
checks the signature again on the session before returning it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cachetools

from models._errors import NotAnOnnxModel, RegistryError
from models.inference import ModelSignature, open_session
from models.registry import Manifest, ModelRef, Registry, default_root, verify

#: The cache's directory when none is given, and its default budget.
CACHE_ENV_VAR = "EDGERAY_MODEL_CACHE"
BUDGET_ENV_VAR = "EDGERAY_MODEL_CACHE_BYTES"
DEFAULT_BUDGET_BYTES = 512 * 2**20
INDEX_FILE = "index.json"
LOCK_FILE = ".lock"

Fetch = Callable[[Manifest], bytes]


def default_cache_dir() -> pathlib.Path:
    """``$EDGERAY_MODEL_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/edgeray/models``."""
    if os.environ.get(CACHE_ENV_VAR):
        return pathlib.Path(os.environ[CACHE_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "edgeray" / "models"


def default_budget_bytes() -> int:
    """``$EDGERAY_MODEL_CACHE_BYTES``, else 512 MiB."""
    return int(os.environ.get(BUDGET_ENV_VAR) or DEFAULT_BUDGET_BYTES)


class _Files(cachetools.LRUCache):
    """An LRU over cached files (sha256 -> size) that deletes a file when it evicts it."""

    def __init__(self, directory: pathlib.Path, budget: int) -> None:
        super().__init__(maxsize=budget, getsizeof=lambda size: max(int(size), 1))
        self.directory = directory
        self.evicted: list[str] = []

    def popitem(self) -> tuple[str, int]:
        sha, size = super().popitem()
        (self.directory / f"{sha}.onnx").unlink(missing_ok=True)
        self.evicted.append(sha)
        return sha, size


class NodeCache:
    """Model artifacts on this node's disk, under ``budget_bytes`` in all (LRU eviction).

    Nothing is created until the first ``path()``.
    """

    def __init__(self, directory: str | os.PathLike, *, budget_bytes: int) -> None:
        if budget_bytes < 1:
            raise ValueError(f"budget_bytes must be >= 1, got {budget_bytes}")
        self.directory = pathlib.Path(directory).expanduser()
        self.budget_bytes = int(budget_bytes)
        self.evicted: list[str] = []  # sha256 of what this instance evicted, oldest first

    def __repr__(self) -> str:
        return f"NodeCache({str(self.directory)!r}, budget_bytes={self.budget_bytes})"

    def path(self, manifest: Manifest, fetch: Fetch) -> pathlib.Path:
        """A local file holding ``manifest``'s bytes, fetched (``fetch(manifest)``) at most once.

        A fetched or cached file whose sha256 is not the manifest's is refused
        (``CorruptArtifact``) or, if already cached, fetched again.
        """
        if manifest.size > self.budget_bytes:
            raise RegistryError(
                f"{manifest.ref} is {manifest.size} bytes, more than the whole model cache budget "
                f"({self.budget_bytes} bytes) of {str(self.directory)!r}; raise the budget "
                f"(${BUDGET_ENV_VAR} or NodeCache(budget_bytes=...))",
                ref=manifest.ref,
            )
        file = self.directory / f"{manifest.sha256}.onnx"
        with self._locked():
            files, index = self._load()
            if manifest.sha256 in files and _intact(file, manifest):
                # Re-insert to mark it most recently used: then the dict's order (saved in
                # the index) and the LRU's own order stay the same, oldest first.
                files[manifest.sha256] = files.pop(manifest.sha256)
            else:
                files.pop(manifest.sha256, None)
                data = fetch(manifest)
                verify(data, manifest, where="the fetched artifact")
                tmp = self.directory / f".{manifest.sha256}.{uuid.uuid4().hex}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, file)
                files[manifest.sha256] = manifest.size  # evicts least recently used files
                index.setdefault("refs", {})[manifest.sha256] = manifest.ref
            self.evicted.extend(files.evicted)
            self._save(files, index)
        return file

    def used_bytes(self) -> int:
        """Bytes of the artifacts in the cache now."""
        return sum(f.stat().st_size for f in self.directory.glob("*.onnx"))

    def cached(self) -> list[str]:
        """sha256 of every cached artifact, least recently used first."""
        with self._locked():
            files, _ = self._load()
            return list(files.keys())

    # -- internals -------------------------------------------------------------------
    def _load(self) -> tuple[_Files, dict[str, Any]]:
        """The LRU as the index records it (oldest first), without files that vanished."""
        path = self.directory / INDEX_FILE
        index = json.loads(path.read_text()) if path.exists() else {}
        files = _Files(self.directory, self.budget_bytes)
        on_disk = {p.stem: p.stat().st_size for p in self.directory.glob("*.onnx")}
        for sha in index.get("order", []):
            if sha in on_disk:
                files[sha] = on_disk.pop(sha)  # a smaller budget than before evicts here
        for sha, size in on_disk.items():  # files the index does not know: oldest
            files[sha] = size
        return files, index

    def _save(self, files: _Files, index: dict[str, Any]) -> None:
        order = list(files.keys())
        refs = {sha: ref for sha, ref in index.get("refs", {}).items() if sha in files}
        tmp = self.directory / f".{INDEX_FILE}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps({"order": order, "refs": refs}, indent=1))
        os.replace(tmp, self.directory / INDEX_FILE)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / LOCK_FILE, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _intact(file: pathlib.Path, manifest: Manifest) -> bool:
    try:
        if file.stat().st_size != manifest.size:
            return False
        return hashlib.sha256(file.read_bytes()).hexdigest() == manifest.sha256
    except FileNotFoundError:
        return False


class ModelResolver:
    """Opens ``NAME@VERSION|ALIAS`` references for operators: registry + node cache.

    Construction touches nothing; ``at(location)`` builds one with the defaults.
    """

    def __init__(self, registry: Registry, cache: NodeCache) -> None:
        self.registry = registry
        self.cache = cache

    def __repr__(self) -> str:
        return f"ModelResolver({self.registry!r}, {self.cache!r})"

    @classmethod
    def at(
        cls,
        location: str | os.PathLike | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        budget_bytes: int | None = None,
    ) -> ModelResolver:
        """A resolver on the registry at ``location`` (``None``: ``$EDGERAY_MODELS`` or
        ``~/.local/share/edgeray/models``) with this node's cache (``$EDGERAY_MODEL_CACHE``
        or ``~/.cache/edgeray/models``, ``$EDGERAY_MODEL_CACHE_BYTES`` or 512 MiB)."""
        return cls(
            Registry(default_root() if location is None else location),
            NodeCache(
                default_cache_dir() if cache_dir is None else cache_dir,
                budget_bytes=default_budget_bytes() if budget_bytes is None else budget_bytes,
            ),
        )

    def path(self, ref: str | ModelRef) -> tuple[Manifest, pathlib.Path]:
        """``(manifest, local file)`` of ``ref``, fetched into the node cache if needed."""
        manifest = self.registry.resolve(ref)
        return manifest, self.cache.path(manifest, self.registry.open)

    def session(
        self,
        ref: str | ModelRef,
        signature: ModelSignature | None = None,
        *,
        intra_op_threads: int = 1,
        providers: Sequence[str] | None = None,
    ) -> tuple[Manifest, Any]:
        """``(manifest, onnxruntime session)`` for ``ref``, checked against ``signature``.

        A manifest that does not fit ``signature`` is refused (``SignatureMismatch``)
        before anything is fetched; the opened session is checked again.
        """
        manifest = self.registry.resolve(ref)
        where = f"{manifest.ref} (from {str(ref)!r} in registry {self.registry.root!r})"
        if signature is not None:
            signature.check(manifest, model=where)
        file = self.cache.path(manifest, self.registry.open)
        try:
            session = open_session(file, intra_op_threads=intra_op_threads, providers=providers)
        except NotAnOnnxModel:
            if file.exists():
                raise
            # Another replica's fetch evicted it between path() and here: fetch it again.
            file = self.cache.path(manifest, self.registry.open)
            session = open_session(file, intra_op_threads=intra_op_threads, providers=providers)
        if signature is not None:
            signature.check(session, model=where)
        return manifest, session
