"""The ``lanes`` pipeline: camera and lane detection on the vehicle, Parquet on the hub.

>>> p = build(video="clip.mp4", out_dir="out/lanes")
>>> p.validate()
>>> [(s.name, s.role, dict(s.placement.selector)) for s in p.specs.values()]
... # doctest: +NORMALIZE_WHITESPACE
[('camera', 'source', {'edge.role': 'vehicle', 'edge.sensor.camera': 'true'}),
 ('lane_detector', 'operator', {'edge.role': 'vehicle'}),
 ('recorder', 'sink', {'edge.role': 'hub'})]

Run it on Ray with ``python pipelines/lanes.py`` (``RAY_ADDRESS``, a fleet that
``edgeray up`` started, or an embedded local fleet), ``edgeray run pipelines/lanes.py``,
``edgeray submit pipelines/lanes.py``, or ``ray job submit -- python pipelines/lanes.py``.
"""

from __future__ import annotations

import os

from operators.lanes import LaneDetector
from operators.parquet_sink import ParquetSink
from operators.video import VideoSource
from pipelines._graph import Pipeline
from pipelines.data import data_path

#: The clip used when no video is named (in the shared test data).
DEFAULT_VIDEO = ("lanes-udacity", "p1", "test_videos", "solidWhiteRight.mp4")


def build(
    video: str | os.PathLike[str] | int | None = None,
    out_dir: str | os.PathLike[str] = "out/lanes",
    max_frames: int | None = None,
    *,
    rate_hz: float | None = 25.0,
) -> Pipeline:
    """The ``lanes`` pipeline over ``video`` (default: the Udacity solidWhiteRight clip).

    ``out_dir``: where the sink writes Parquet (on the hub). ``max_frames``:
    stop after that many frames. ``rate_hz``: how often the camera is polled
    (the clip's 25 fps by default; ``None``: as fast as frames are read).
    """
    target = data_path(*DEFAULT_VIDEO) if video is None else video
    p = Pipeline("lanes")
    p.source(
        "camera",
        VideoSource(target, max_frames=max_frames),
        rate_hz=rate_hz,
        placement={"edge.role": "vehicle", "edge.sensor.camera": "true"},
    )
    p.operator("lane_detector", LaneDetector(), placement={"edge.role": "vehicle"})
    p.sink("recorder", ParquetSink(out_dir), placement={"edge.role": "hub"})
    p.connect("camera.frames", "lane_detector.frames")
    p.connect("lane_detector.lanes", "recorder.in")
    return p


if __name__ == "__main__":  # `python pipelines/lanes.py`, also as a Ray job's entrypoint
    from pipelines import launch

    launch(build)
