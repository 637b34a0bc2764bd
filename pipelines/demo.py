"""``make demo``: a scripted drive through the autonomous-driving pipeline on a local edge fleet.

Brings up the fleet of ``cluster/fleets/local.toml`` in this process (a head plus a
vehicle, a roadside unit and a city hub, each a labeled Ray node on 127.0.0.1) and runs
``pipelines.autonomous_driving`` across it in real time: the simulator (camera at
30 Hz, lidar, GPS-IMU), perception (lanes, the project's detector, lidar fusion, sign
recognition), safety, decisions and control on the vehicle, the recorders and the
annotated video on the hub. The default drive (``lead_emergency_brake``, a held-out
variant) follows a lead car along a lane, recognises a speed-limit sign and brakes when
the lead brakes hard. A live line shows the messages the sinks have recorded; at the end
it prints the run summary (accounting identity, drops by reason, placement) and what the
vehicle did, judged against the simulator's ground truth (which no operator reads), and
where the recordings and the video strip are. Earlier results in the output directory
are replaced. ``--local`` runs the same pipeline with the local runner, without Ray.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from operators.driving import SCENARIOS, scenario
from operators.recording import read_recording
from operators.signs import sign_names
from pipelines._summary import RunSummary
from pipelines.autonomous_driving import build
from pipelines.testing import run_local


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__)
    parser.add_argument("--scenario", default="lead_emergency_brake", choices=sorted(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0, help="the held-out variant (0)")
    parser.add_argument("--out", default="out/driving", help="output directory (out/driving)")
    parser.add_argument("--local", action="store_true", help="the local runner, without Ray")
    args = parser.parse_args(argv)
    console = Console()
    out_dir = pathlib.Path(args.out).resolve()
    shutil.rmtree(out_dir, ignore_errors=True)
    drive = scenario(args.scenario, seed=args.seed, held_out=True)
    console.print(f"drive: {drive.name} (held-out seed {args.seed}), {drive.duration_s:.0f} s")
    pipeline = build(args.scenario, seed=args.seed, held_out=True, out_dir=out_dir,
                     realtime=not args.local)  # fmt: skip
    if args.local:
        summary = run_local(pipeline).summary
        console.print(summary.format(), highlight=False, soft_wrap=True)
    else:
        summary = _run_on_fleet(pipeline, console)
    _report(out_dir, console)
    if summary.unplaceable or not summary.identity_holds():
        raise SystemExit(1)


def _run_on_fleet(pipeline, console: Console) -> RunSummary:
    """The pipeline on an embedded local fleet, with the sinks' count as the live line."""
    from pipelines._launch import run_anywhere

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=None)
        summary = run_anywhere(
            pipeline,
            timeout_s=600,
            on_progress=lambda n: progress.update(task, description=f"{n} messages recorded"),
            say=console.print,
        )
    console.print(summary.format(), highlight=False, soft_wrap=True)
    return summary


def _report(out_dir: pathlib.Path, console: Console) -> None:
    """What the vehicle did, from the hub's recordings (truth read here, never by operators)."""
    ego = [m for _, m in read_recording(out_dir / "ego_log")]
    commands = [m for _, m in read_recording(out_dir / "commands")]
    signs = [m for _, m in read_recording(out_dir / "sign_log")]
    aeb = [m for m in commands if m.payload["aeb"]]
    if aeb:
        first = aeb[0]
        console.print(f"emergency braking at t={first.event_ts / 1e9:.2f} s, "
                      f"time to collision {first.payload['ttc_s']:.2f} s")  # fmt: skip
    gap = min(m.truth["gap"] for m in ego)
    lateral = max(abs(m.truth["lateral_offset"]) for m in ego)
    collided = "YES" if any(m.truth["collision"] for m in ego) else "no"
    console.print(
        f"speed {ego[0].truth['speed']:.1f} -> {ego[-1].truth['speed']:.1f} m/s, closest gap "
        f"{gap:.1f} m, collision: {collided}, furthest from the lane centre {lateral:.2f} m"
    )
    names = sign_names()
    seen = sorted({names[c] for m in signs for c in m.payload["voted_classes"] if c >= 0})
    console.print(f"signs recognised: {', '.join(seen) or 'none'}")
    strips = sorted((out_dir / "video").glob("*-strip.png"))
    console.print(f"recordings under {out_dir}; video strip {strips[0] if strips else 'none'}")


if __name__ == "__main__":
    main()
