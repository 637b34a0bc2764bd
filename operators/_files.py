"""What the file-writing sinks (``ParquetSink``, ``Recorder``) share: names and directories.

Each replica writes ``<operator>-<replica>-<NNNNNN><suffix>`` files into one
directory, continuing after the files a previous run (or a restarted replica)
left there, so several replicas never collide and nothing is overwritten.

>>> replica_prefix("lanes/detector", 0)
'lanes_detector-0'
"""

from __future__ import annotations

import os
import pathlib
import re

from operators._errors import OperatorError


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
