"""``ParquetSink`` records messages as Parquet files in a directory; ``read_parquet_dir`` reads.

>>> import tempfile
>>> import numpy as np
>>> from operators import Context, Message
>>> out = tempfile.mkdtemp()
>>> sink = ParquetSink(out, rows_per_file=2)
>>> sink.setup(Context(operator="store", replica=0))
>>> image = np.zeros((4, 4, 3), np.uint8)
>>> for i in range(3):
...     _ = sink.process("in", Message("cam", i, i, {"n": i, "image": image}))
>>> sink.teardown()                      # flushes the last, partial file
>>> sorted(p.name for p in pathlib.Path(out).iterdir())
['store-0-000000.parquet', 'store-0-000001.parquet']
>>> [(m.seq, dict(m.payload)) for m in read_parquet_dir(out)]   # "image" was dropped
[(0, {'n': 0}), (1, {'n': 1}), (2, {'n': 2})]
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from dataclasses import replace

import pyarrow.parquet as pq

from operators._arrow import messages_to_table, table_to_messages
from operators._errors import OperatorError
from operators._files import FileSink, write_parquet_atomically
from operators._message import Message
from operators._operator import Outputs

SUFFIX = ".parquet"


class ParquetSink(FileSink):
    """Buffers messages and writes them as Parquet files into a directory.

    Inputs:
      ``in``: any message; one row per message (``operators.messages_to_table``).
    Outputs: none.
    Parameters:
      ``directory``: where the files go (created in ``setup``, on the node
      where the sink runs).
      ``rows_per_file`` (keyword-only): a file is written whenever this many
      messages are buffered; ``flush()`` (graceful stop, ``teardown``) writes
      the rest.
      ``drop_fields`` (keyword-only): payload fields left out of the files
      (default ``("image",)``: keep big arrays out).
      ``compression`` (keyword-only): the Parquet codec.

    Files are named ``<operator>-<replica>-<index>.parquet`` from the ``Context``,
    so replicas of one sink never collide, and a restarted replica continues
    after the highest index already in the directory. A file appears
    atomically (written under a hidden name, then renamed). ``snapshot()``
    flushes first, so a replacement replica starts with nothing pending.
    """

    inputs = ("in",)

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        rows_per_file: int = 1000,
        drop_fields: Sequence[str] = ("image",),
        compression: str = "zstd",
    ) -> None:
        if rows_per_file < 1:
            raise OperatorError(f"rows_per_file={rows_per_file}; use 1 or more")
        self.rows_per_file = rows_per_file
        self.drop_fields = tuple(drop_fields)
        self.compression = compression
        self._init_files(directory, batch_rows=rows_per_file)

    def _suffix(self) -> str:
        return SUFFIX

    def process(self, port: str, message: Message) -> Outputs:
        if self.drop_fields and any(f in message.payload for f in self.drop_fields):
            kept = {k: v for k, v in message.payload.items() if k not in self.drop_fields}
            message = replace(message, payload=kept)
        self._add(message)
        return ()

    def _write(self, batch: list[Message]) -> None:
        """One file per batch."""
        table = messages_to_table(batch)
        path = self._next_file()
        write_parquet_atomically(table, path, compression=self.compression)
        self.files.append(str(path))


def read_parquet_dir(path: str | os.PathLike[str]) -> list[Message]:
    """The messages in a directory of Parquet files (or one file), file by file, in name order."""
    path = pathlib.Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == SUFFIX and p.name[0] != ".")
    else:
        raise FileNotFoundError(
            f"no Parquet directory or file at {str(path)!r}; pass the directory a ParquetSink "
            "wrote to"
        )
    return [m for f in files for m in table_to_messages(pq.read_table(f))]
