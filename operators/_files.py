"""What the file-writing sinks (``ParquetSink``, ``Recorder``) share: ``FileSink`` and names.

Each replica writes ``<operator>-<replica>-<NNNNNN><suffix>`` files into one
directory, continuing after the files a previous run (or a restarted replica)
left there, so several replicas never collide and nothing is overwritten.

>>> replica_prefix("lanes/detector", 0)
'lanes_detector-0'
"""

from __future__ import annotations

import abc
import os
import pathlib
import re
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from operators._errors import OperatorError
from operators._operator import Context, Sink


def replica_prefix(operator: str, replica: int | str) -> str:
    """The file-name prefix of one replica (characters unfit for a file name become ``_``)."""
    return f"{_safe(operator)}-{_safe(str(replica))}"


def output_directory(
    directory: str | os.PathLike[str], *, operator: str, what: str
) -> pathlib.Path:
    """Create ``directory`` if needed, or raise an ``OperatorError`` saying how to fix it."""
    path = pathlib.Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OperatorError(
            f"cannot create the {what} {os.fspath(directory)!r} ({err}); "
            "pass a directory the sink's process can write to",
            operator=operator,
        ) from err
    return path


def next_free_index(directory: pathlib.Path, prefix: str, suffix: str) -> int:
    """One more than the highest ``<prefix>-<N><suffix>`` already in ``directory`` (else 0)."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+){re.escape(suffix)}")
    found = [int(m.group(1)) for p in directory.iterdir() if (m := pattern.fullmatch(p.name))]
    return max(found, default=-1) + 1


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


class FileSink(Sink, metaclass=abc.ABCMeta):
    """A sink that buffers what it receives and writes it as numbered files.

    Subclasses call ``_init_files(directory, batch_rows=...)`` in ``__init__``, add
    to the buffer with ``_add(item)``, and implement ``_suffix()`` and
    ``_write(batch)`` (``_next_file()`` gives the next free path). The base does
    the rest the same way for all: ``setup`` creates the directory and continues
    after the files already there, a full buffer is written at once, ``flush``,
    ``snapshot`` (which flushes, so a replacement starts with nothing pending),
    ``restore`` and ``teardown``.
    """

    #: How error messages name the directory.
    what: ClassVar[str] = "output directory"

    def _init_files(self, directory: str | os.PathLike[str], *, batch_rows: int) -> None:
        """Call from ``__init__`` (after checking ``batch_rows >= 1`` under its public name)."""
        self.directory = os.fspath(directory)
        self.batch_rows = batch_rows
        self.prefix = "sink-0"
        self.next_index = 0  # the index the next file takes
        self.rows_written = 0
        self.files: list[str] = []
        self._buffer: list[Any] = []
        self._ready = False

    @abc.abstractmethod
    def _suffix(self) -> str:
        """The file-name suffix, e.g. ``.parquet``."""

    @abc.abstractmethod
    def _write(self, batch: list[Any]) -> None:
        """Make ``batch`` durable (one or more files)."""

    def setup(self, ctx: Context) -> None:
        self.prefix = replica_prefix(ctx.operator, ctx.replica)
        path = output_directory(self.directory, operator=ctx.operator, what=self.what)
        self.next_index = max(self.next_index, next_free_index(path, self.prefix, self._suffix()))
        self._ready = True

    def _add(self, item: Any) -> None:
        self._buffer.append(item)
        if len(self._buffer) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        """Write everything buffered (nothing when the buffer is empty)."""
        if not self._buffer:
            return
        if not self._ready:
            raise OperatorError(
                f"flush() before setup(ctx): {len(self._buffer)} messages are buffered but the "
                f"{self.what} is not set up; call setup(ctx) first"
            )
        self._write(self._buffer)
        self.rows_written += len(self._buffer)
        self._buffer = []

    def _next_file(self) -> pathlib.Path:
        """The next numbered path that does not exist yet (its index is then taken)."""
        while True:
            path = (
                pathlib.Path(self.directory)
                / f"{self.prefix}-{self.next_index:06d}{self._suffix()}"
            )
            self.next_index += 1
            if not path.exists():
                return path

    def snapshot(self) -> dict[str, int]:
        self.flush()
        return {"next_index": self.next_index, "rows_written": self.rows_written}

    def restore(self, state: dict[str, int]) -> None:
        self.next_index = max(self.next_index, int(state["next_index"]))
        self.rows_written = int(state["rows_written"])

    def teardown(self) -> None:
        self.flush()


def write_parquet_atomically(table: pa.Table, path: pathlib.Path, *, compression: str) -> None:
    """Write ``table`` under a hidden name, then rename: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    pq.write_table(table, partial, compression=compression)
    os.replace(partial, path)
