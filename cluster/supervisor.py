"""The process behind ``edgeray up``: holds a :class:`LocalFleet` until SIGTERM / SIGINT.

``python -m cluster.supervisor SPEC --state-dir DIR [--dashboard-port N]``

It starts the fleet (Ray's node processes share its fate), writes ``DIR/state.json`` once
every node is alive, and on SIGTERM or SIGINT stops every Ray process it started, removes
the state file and exits 0. ``edgeray up`` starts it detached (its own session) and waits
for the state file; ``edgeray down`` sends it SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from cluster._local import RAY_ENV, LocalFleet
from cluster._spec import load_spec
from cluster._state import FleetState, Proc, clear


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cluster.supervisor")
    ap.add_argument("spec")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--dashboard-port", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=90.0)
    args = ap.parse_args(argv)

    os.environ.update(RAY_ENV)
    # Jobs run `python ...` on this fleet: make that the interpreter the fleet runs on.
    bindir = os.path.dirname(sys.executable)
    os.environ["PATH"] = os.pathsep.join([bindir, os.environ.get("PATH", "")])

    spec = load_spec(args.spec)
    fleet = LocalFleet(
        spec,
        state_dir=args.state_dir,
        dashboard_port=args.dashboard_port,
        auth=True,
        timeout_s=args.timeout,
    )
    stop = threading.Event()
    # Installed before start so a signal during start-up also stops cleanly, and again
    # after it, because Ray's node API installs its own SIGTERM handler.
    _on_signals(stop)
    fleet.start()
    _on_signals(stop)
    try:
        procs = []
        for p in fleet.processes():
            procs += [Proc.of(pid, p.name) for pid in p.pids]
        FleetState(
            fleet=spec.name,
            spec_path=os.path.abspath(args.spec),
            supervisor=Proc.of(os.getpid(), "supervisor"),
            gcs_address=fleet.address,
            dashboard_url=fleet.dashboard_url,
            token_path=str(fleet.token_path.resolve()) if fleet.token_path else None,
            ray_temp_dir=fleet.temp_root or "",
            ray_processes=tuple(procs),
            ports={
                "fleet": {"gcs": fleet.gcs_port or 0, "dashboard": fleet.dashboard_port or 0},
                **{p.name: dict(p.ports) for p in fleet.processes()},
            },
            node_ids={p.name: p.node_id for p in fleet.processes()},
        ).write(fleet.state_dir)
        print(f"fleet {spec.name!r} up: {fleet.address}, {fleet.dashboard_url}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        print(f"fleet {spec.name!r}: stopping", flush=True)
        fleet.stop()
        clear(fleet.state_dir)
    return 0


def _on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


if __name__ == "__main__":
    sys.exit(main())
