"""Shared fixtures. Keep each small; data helpers first."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest

from pipelines.data import data_path


@pytest.fixture
def requires_data() -> Callable[..., pathlib.Path]:
    """``requires_data(*parts)``: the path under the shared data, or skip the test saying why."""

    def find(*parts: str) -> pathlib.Path:
        try:
            return data_path(*parts)
        except FileNotFoundError as err:
            pytest.skip(f"test data missing: {err}")

    return find


@pytest.fixture
def one_opencv_thread():
    """OpenCV pinned to one thread for the test (use with ``pytest.mark.usefixtures``)."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)
