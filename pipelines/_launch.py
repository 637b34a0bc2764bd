"""Where a pipeline runs when a user just runs it: the cluster at hand, or an embedded fleet.

In order: ``RAY_ADDRESS`` (set for a Ray job's driver, or exported from
``edgeray env``); a fleet that ``edgeray up`` started (its state directory);
else an embedded fleet from ``cluster/fleets/local.toml`` started in this
process for this run and stopped after it, so shipped pipelines with label
selectors validate anywhere. Used by ``edgeray run``, by every pipeline file's
``__main__`` and by ``make demo``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from pipelines._graph import Pipeline
from pipelines._summary import RunSummary


def run_anywhere(
    pipeline: Pipeline,
    *,
    timeout_s: float | None = None,
    fleet: str = "local",
    state_dir: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    say: Callable[[str], None] = print,
) -> RunSummary:
    """Run ``pipeline`` on the Ray cluster at hand, or on an embedded local fleet."""
    from pipelines._runtime import run

    def go(address: str) -> RunSummary:
        return run(pipeline, address=address, timeout_s=timeout_s, on_progress=on_progress)

    if os.environ.get("RAY_ADDRESS"):
        return go(os.environ["RAY_ADDRESS"])
    from cluster._control import running
    from cluster._state import state_dir as fleet_state_dir

    state = running(fleet_state_dir(fleet, state_dir))
    if state is not None:
        from cluster._local import apply_ray_env

        apply_ray_env({k: v for k, v in state.env().items() if k.startswith("RAY_AUTH")})
        return go(state.gcs_address)
    from cluster._local import LocalFleet
    from cluster._spec import default_spec_path, load_spec

    spec = load_spec(default_spec_path())
    say(f"no RAY_ADDRESS and no fleet up: starting an embedded {spec.name!r} fleet")
    with (
        tempfile.TemporaryDirectory(prefix="edgeray-run-") as tmp,
        LocalFleet(spec, state_dir=tmp, dashboard_port=0) as local,
    ):
        say(f"  {len(spec.nodes)} nodes up; dashboard {local.dashboard_url}")
        try:
            return go(local.address)
        finally:
            import ray

            ray.shutdown()


def launch(build: Callable[[], Pipeline]) -> None:
    """A pipeline file's ``__main__``: ``build()`` and run it wherever it finds itself."""
    summary = run_anywhere(build())
    raise SystemExit(1 if summary.unplaceable else 0)
