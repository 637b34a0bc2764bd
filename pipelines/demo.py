"""``make demo``: lane finding over a real highway clip on a local edge fleet.

Brings up the fleet of ``cluster/fleets/local.toml`` in this process (a head
plus a vehicle, a roadside unit and a city hub, each a labeled Ray node on
127.0.0.1), runs the ``lanes`` pipeline (``pipelines.lanes``) across it: the
camera and the lane detector on the vehicle, the Parquet recorder on the hub,
over the whole Udacity solidWhiteRight clip at its 25 fps. It shows live
progress, prints the run summary, how many frames had both lane lines (read
back from the Parquet files) and where those files are, then takes the fleet
down. ``--local`` runs the same pipeline with the local runner, without Ray.
Earlier results of the pipeline in the output directory are replaced.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import pathlib

import cv2
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from operators.parquet_sink import read_parquet_dir
from pipelines._graph import Pipeline
from pipelines._summary import RunSummary
from pipelines.data import data_path
from pipelines.lanes import DEFAULT_VIDEO, build
from pipelines.testing import LocalRun, run_local


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__)
    parser.add_argument("--video", help="a video file (default: the shared solidWhiteRight.mp4)")
    parser.add_argument("--out", default="out/lanes", help="Parquet directory (out/lanes)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    parser.add_argument("--local", action="store_true", help="the local runner, without Ray")
    args = parser.parse_args(argv)
    console = Console()

    video = pathlib.Path(args.video).resolve() if args.video else data_path(*DEFAULT_VIDEO)
    out_dir = pathlib.Path(args.out).resolve()
    for old in out_dir.glob("recorder-*.parquet"):
        old.unlink()
    pipeline = build(video, out_dir, args.max_frames)
    total = _frame_total(video, args.max_frames)

    if args.local:
        summary = _run_with_progress(pipeline, total, console).summary
        console.print(summary.format(), highlight=False, soft_wrap=True)
    else:
        summary = _run_on_fleet(pipeline, total, console)

    lanes = read_parquet_dir(out_dir)
    both = sum(1 for m in lanes if m.payload["found"] == 2)
    share = both / len(lanes) if lanes else 0.0
    console.print(f"frames with both lane lines: {both} of {len(lanes)} ({share:.1%})")
    console.print(f"lane lines written as Parquet to {out_dir}")
    if summary.unplaceable or not summary.identity_holds():
        raise SystemExit(1)


def _run_on_fleet(pipeline: Pipeline, total: int | None, console: Console) -> RunSummary:
    """The pipeline on an embedded local fleet, with the recorder's count as progress."""
    from pipelines._launch import run_anywhere

    columns = (TextColumn("lanes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("frames", total=total)
        return run_anywhere(
            pipeline,
            timeout_s=600,
            on_progress=lambda n: progress.update(task, completed=n),
            say=console.print,
        )


def _run_with_progress(pipeline: Pipeline, total: int | None, console: Console) -> LocalRun:
    """``run_local`` in a worker thread while the main thread draws the camera's progress."""
    camera = pipeline.specs["camera"].operator  # the local runner drives this very instance
    columns = (TextColumn("lanes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with (
        Progress(*columns, console=console) as progress,
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
    ):
        task = progress.add_task("frames", total=total)
        future = pool.submit(run_local, pipeline)
        while not concurrent.futures.wait([future], timeout=0.1).done:
            progress.update(task, completed=camera.emitted)
        progress.update(task, completed=camera.emitted)
        return future.result()


def _frame_total(video: pathlib.Path, max_frames: int | None) -> int | None:
    capture = cv2.VideoCapture(str(video))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    total = count or None
    if max_frames is not None:
        total = max_frames if total is None else min(total, max_frames)
    return total


if __name__ == "__main__":
    main()
