"""A tiny pipeline-shaped file for the fleet tests: build() plus a __main__ that places one
actor per role by label selector and prints, as one JSON line, where each landed."""

from __future__ import annotations

import json

ROLES = ("vehicle", "rsu", "hub")


def build():
    from pipelines import Pipeline

    return Pipeline("fleet-probe")


if __name__ == "__main__":
    import ray

    ray.init()

    @ray.remote(num_cpus=0.1)
    class Probe:
        def where(self) -> dict:
            ctx = ray.get_runtime_context()
            return {"node_id": ctx.get_node_id(), "labels": ctx.get_node_labels()}

    probes = {
        role: Probe.options(name=f"probe-{role}", label_selector={"edge.role": role}).remote()
        for role in ROLES
    }
    where = {role: ray.get(p.where.remote(), timeout=60) for role, p in probes.items()}
    print("FLEET-PROBE " + json.dumps(where, sort_keys=True), flush=True)
