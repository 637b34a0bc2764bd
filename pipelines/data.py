"""Where the shared test data lives: ``data_path(*parts)``.

``$EDGERAY_DATA`` when set, else ``<project root>/../shared/data`` (the project
root is the directory holding the ``pipelines`` package). The data is public
sensor data kept outside the repository (see its ``MANIFEST.md``); tests that
need it skip when it is absent.

>>> import tempfile
>>> from unittest import mock
>>> root = tempfile.mkdtemp()
>>> with mock.patch.dict(os.environ, {"EDGERAY_DATA": root}):
...     data_path() == pathlib.Path(root)
True
>>> with mock.patch.dict(os.environ, {"EDGERAY_DATA": root}):
...     data_path("lanes-udacity")  # doctest: +ELLIPSIS
Traceback (most recent call last):
  ...
FileNotFoundError: shared test data 'lanes-udacity' not found at ...
"""

from __future__ import annotations

import os
import pathlib

ENV_VAR = "EDGERAY_DATA"
PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data"


def data_root() -> pathlib.Path:
    """The data directory in use (``$EDGERAY_DATA`` or the default), existing or not."""
    env = os.environ.get(ENV_VAR)
    return pathlib.Path(env) if env else DEFAULT_DATA


def data_path(*parts: str) -> pathlib.Path:
    """The path of ``parts`` under the shared data directory; ``FileNotFoundError`` if absent."""
    path = data_root().joinpath(*parts)
    if not path.exists():
        env = os.environ.get(ENV_VAR)
        looked = f"${ENV_VAR}={env!r}" if env else f"${ENV_VAR} is not set"
        raise FileNotFoundError(
            f"shared test data {'/'.join(parts) or '(root)'!r} not found at {str(path)!r} "
            f"({looked}; the default place is {str(DEFAULT_DATA)!r}); point ${ENV_VAR} at a "
            "copy of the data directory, or put it at the default place"
        )
    return path
