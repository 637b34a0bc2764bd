"""Smart city: closed-loop signal control on SUMO against SUMO's own controllers, alerts, real time.

Question: do the pipeline's signal policies beat SUMO's fixed-time, actuated and
delay-based controllers on the same demand, does every injected incident and pollution
episode raise an alert (and how many false ones), and does the pipeline keep up with
SUMO in real time on the city fleet?

Control quality: the 3x3 grid (``operators.city.Scenario``: 200 m links, SUMO's
``randomTrips.py`` background plus a west-to-east morning peak), at a moderate and a
peak load, three seeds; SUMO's ``static``, ``actuated`` and ``delay_based`` programs
(``netgenerate --tls.default-type``) run as plain SUMO processes; ours (``webster``,
``max-pressure``; Webster at the moderate load only, see ``OURS_AT``) run by
``operators.city.closed_loop`` — the pipeline's operator
classes driven directly against libsumo in one process — over the same demand and
horizon (until every vehicle has arrived, at most twice the demand window; SUMO's own
teleporting of vehicles stuck 300 s). Figures: SUMO's mean waiting time and trip time
per finished trip and the trips left unfinished. Pollution episodes are injected in
every run of ours (they do not touch traffic); incidents (a vehicle stopped near the
stop line of a peak-axis approach) in separate max-pressure runs, so the control
comparison stays like for like.

Real time: the pipeline on the ``cluster/fleets/city.toml`` fleet (three roadside Ray
nodes and a hub on loopback), SUMO stepping 1 s per poll, polled 10 times per wall second
(the target: 10 simulated seconds per wall second) and then 20 (``headroom_*``), over 300
simulated seconds each (moderate load); ``sim_speedup`` is simulated over wall seconds
from the simulator's own status stream, ``decision_latency_p99_ms`` the p99 from a
reading's emission to its command being applied in SUMO (budget: one 1 s step at the
speed-up, 100 ms at 10x), also in simulated seconds (``decision_latency_p99_sim_s``);
``readings_dropped`` counts readings a unit fell too far behind to take. For scale,
``inprocess_sim_speedup``: the same operators without Ray (the closed loop, max-pressure,
moderate load; two runs share the two cores).

``python -m bench.smart_city`` (about 3 minutes on 2 cores when no one else is using them;
``--quick``: one seed, a 600 s demand window, 120 simulated seconds per rate on the fleet)
prints the table and, last, one JSON object; it is saved to
``bench/results/smart_city[.quick].json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from operators.city import Episode, Incident, Scenario, generate  # noqa: E402
from operators.city.closed_loop import run_closed_loop, run_sumo  # noqa: E402

LOADS = {
    "moderate": Scenario(period_s=3.0, peak_vph=600.0),  # ~1700 trips/h over the hour
    "peak": Scenario(period_s=1.2, peak_vph=1200.0),  # ~4000 trips/h
}
SUMO_CONTROLLERS = ("static", "actuated", "delay_based")
OURS = ("webster", "max-pressure")
#: Which of ours run at each load: Webster, far behind at the peak in every quick run
#: (waiting ~3x SUMO's actuated), is left out there to keep the bench within 5 minutes.
OURS_AT = {"moderate": OURS, "peak": ("max-pressure",)}
RESULTS = pathlib.Path(__file__).parent / "results"
#: Simulated seconds per wall second asked of the city on the fleet (SUMO steps 1 s per
#: poll): the target, then twice it to show the headroom (the source is paced and never
#: waits for the units: one that falls behind drops its oldest readings, counted).
REALTIME_RATES = (10.0, 20.0)
#: An alert counts for an injected event if it comes within this long after the event's end.
GRACE_S = 120.0
#: Alert kinds that report a problem (closing kinds such as ``incident_cleared`` do not).
PROBLEM_KINDS = ("incident", "pollution_episode", "device_garbage", "device_silent")


def episodes(scenario: Scenario, seed: int) -> tuple[Episode, ...]:
    """Two pollution episodes, 10 minutes each, at random junctions and times."""
    rng = random.Random(seed * 7919)
    span = max(scenario.demand_s - 900, 300)
    starts = sorted(rng.sample(range(300, 300 + span, 60), 2))
    return tuple(Episode(rng.choice(scenario.intersections()), float(t), 600.0) for t in starts)


def incidents(scenario: Scenario, seed: int) -> tuple[Incident, ...]:
    """Two stopped vehicles on west approaches (lane 0) of junctions in columns B and C."""
    rng = random.Random(seed * 104729)
    junctions = [j for j in scenario.intersections() if j[0] in "BC"]
    half = scenario.demand_s // 2
    return tuple(
        Incident(rng.choice(junctions), float(start), 240.0, lane=0)
        for start in (rng.randrange(120, half - 120, 10), rng.randrange(half, 2 * half - 120, 10))
    )


def run_job(job: tuple[str, str, int, int]) -> dict:
    """One run in a worker process (libsumo holds one simulation per process)."""
    kind, load, seed, demand_s = job
    scenario = replace(LOADS[load], seed=seed, demand_s=demand_s)
    if kind in SUMO_CONTROLLERS:
        out = run_sumo(replace(scenario, tls_type=kind))
        injected: dict = {}
    elif kind == "incidents":
        inc = incidents(scenario, seed)
        out = run_closed_loop(scenario, "max-pressure", incidents=inc)
        injected = {"incidents": [(i.intersection, i.start_s, i.duration_s) for i in inc]}
    else:
        eps = episodes(scenario, seed)
        out = run_closed_loop(scenario, kind, episodes=eps)
        injected = {"episodes": [(e.intersection, e.start_s, e.duration_s) for e in eps]}
    return {
        "kind": kind,
        "load": load,
        "seed": seed,
        "controller": out.controller,
        **out.statistics,
        "sim_s": out.sim_s,
        "wall_s": out.wall_s,
        "alerts": [dict(a) for a in out.alerts],
        **injected,
    }


def score_alerts(runs: list[dict]) -> dict:
    """Missed injected events, detection delays and false alerts over the runs of ours."""
    missed, delays, false, sim_s = 0, {"incident": [], "pollution_episode": []}, 0, 0.0
    for run in runs:
        if run["kind"] in SUMO_CONTROLLERS:
            continue
        sim_s += run["sim_s"]
        events = [("incident", *e) for e in run.get("incidents", [])]
        events += [("pollution_episode", *e) for e in run.get("episodes", [])]
        problems = [a for a in run["alerts"] if a["kind"] in PROBLEM_KINDS]
        matched = set()
        for kind, junction, start, duration in events:
            hits = [
                i
                for i, a in enumerate(problems)
                if a["kind"] == kind
                and a["intersection"] == junction
                and start <= a["t_s"] <= start + duration + GRACE_S
            ]
            if not hits:
                missed += 1
                continue
            matched.update(hits)
            delays[kind].append(problems[hits[0]]["t_s"] - start)
        false += len(problems) - len(matched)
    return {
        "alerts_missed": missed,
        "incident_alert_delay_max_s": max(delays["incident"], default=float("nan")),
        "pollution_alert_delay_max_s": max(delays["pollution_episode"], default=float("nan")),
        "false_alerts": false,
        "alert_sim_days": sim_s / 86400.0,
        "false_alerts_per_day": false / (sim_s / 86400.0) if sim_s else float("nan"),
    }


def control_table(runs: list[dict]) -> list[dict]:
    """Mean over seeds of waiting and trip time, total unfinished trips, per load and controller."""
    rows = []
    for load in LOADS:
        for kind in (*SUMO_CONTROLLERS, *OURS):
            mine = [r for r in runs if r["load"] == load and r["kind"] == kind]
            if not mine:
                continue
            rows.append(
                {
                    "load": load,
                    "controller": mine[0]["controller"],
                    "seeds": len(mine),
                    "mean_waiting_s": statistics.fmean(r["mean_waiting_s"] for r in mine),
                    "mean_trip_s": statistics.fmean(r["mean_trip_s"] for r in mine),
                    "trips": sum(r["trips"] for r in mine),
                    "unfinished": sum(r["unfinished"] for r in mine),
                }
            )
    return rows


def realtime(horizon_s: float, rates: tuple[float, ...] = REALTIME_RATES) -> dict:
    """The pipeline on the city fleet in real time, once per asked rate: speed-up, decision
    latency (wall ms, and simulated seconds at that speed-up), readings a unit dropped."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from cluster import LocalFleet, load_spec

    spec = load_spec(pathlib.Path(__file__).parents[1] / "cluster" / "fleets" / "city.toml")
    with tempfile.TemporaryDirectory() as tmp, LocalFleet(spec, state_dir=f"{tmp}/state") as fleet:
        arms = [
            _realtime_run(fleet.address, f"{tmp}/out{i}", horizon_s, rate)
            for i, rate in enumerate(rates)
        ]
    target, *faster = arms
    return {**target, **{f"headroom_{k}": v for k, v in (faster[-1] if faster else {}).items()}}


def _realtime_run(address: str, out: str, horizon_s: float, rate_hz: float) -> dict:
    import ray

    from operators.parquet_sink import read_parquet_dir
    from pipelines import Runtime
    from pipelines.smart_city import build

    p = build(out_dir=out, realtime=True, rate_hz=rate_hz, end_s=horizon_s)
    runtime = Runtime(p, address=address, placement_timeout_s=120.0)
    try:
        summary = runtime.run(timeout_s=horizon_s / rate_hz * 3 + 60)
    finally:
        ray.shutdown()
    status = sorted(read_parquet_dir(f"{out}/status_log"), key=lambda m: m.event_ts)
    latency = np.concatenate([np.asarray(m.payload["latency_ms"], float) for m in status])
    first, last = status[0], status[-1]
    speedup = (last.payload["t_s"] - first.payload["t_s"]) / (
        (last.ingest_ts - first.ingest_ts) / 1e9
    )
    readings = summary.edges["sim.readings->rsu.readings"]
    p50, p99 = (float(np.percentile(latency, q)) for q in (50, 99))
    return {
        "sim_speedup": speedup,
        "sim_rate_asked": rate_hz,
        "realtime_sim_s": last.payload["t_s"],
        "decision_latency_p50_ms": p50,
        "decision_latency_p99_ms": p99,
        "decision_latency_p99_sim_s": p99 / 1e3 * speedup,
        "decisions_measured": int(latency.size),
        "readings_dropped": sum(readings.dropped.values()),
        "readings_sent": readings.sent,
        "fallback_max": max(int(m.payload["fallback"]) for m in status),
        "controllers_on": sorted({n for a, n in summary.placement.items() if "/rsu#" in a}),
        "identity_holds": summary.identity_holds(),
    }


def main(argv: list[str] | None = None) -> dict:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--quick", action="store_true", help="one seed, short horizons")
    opts = args.parse_args(argv)
    seeds, demand_s = ((1,), 600) if opts.quick else ((1, 2, 3), 3600)
    jobs = [
        (k, load, s, demand_s)
        for load in LOADS
        for s in seeds
        for k in (*OURS_AT[load], *SUMO_CONTROLLERS)
    ]
    jobs += [("incidents", load, s, demand_s) for load in LOADS for s in seeds[:1]]
    jobs.sort(key=lambda j: (j[1] != "peak", j[0] in SUMO_CONTROLLERS))  # longest first
    for _, load, seed, _ in jobs:  # generate each scenario once, before the workers race
        for tls in SUMO_CONTROLLERS:
            generate(replace(LOADS[load], seed=seed, demand_s=demand_s, tls_type=tls))
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        runs = list(pool.map(run_job, jobs))
    control_wall = time.perf_counter() - started
    table = control_table(runs)
    by = {(r["load"], r["controller"]): r for r in table}

    def waiting(load: str, controller: str) -> float:
        return by[(load, controller)]["mean_waiting_s"]

    best = min(OURS, key=lambda k: waiting("moderate", k))
    if best not in OURS_AT["peak"]:
        raise SystemExit(f"the best policy at moderate load, {best}, was not run at the peak")
    rt = realtime(120.0 if opts.quick else 300.0)
    figures = {
        "best_policy": best,
        "waiting_reduction_vs_fixed": 1
        - waiting("moderate", best) / waiting("moderate", "sumo-static"),
        "waiting_ratio_vs_actuated": waiting("moderate", best)
        / waiting("moderate", "sumo-actuated"),
        "waiting_ratio_vs_delay_based": waiting("moderate", best)
        / waiting("moderate", "sumo-delay_based"),
        "waiting_ratio_vs_actuated_peak": waiting("peak", best) / waiting("peak", "sumo-actuated"),
        "unfinished_trips_peak": by[("peak", best)]["unfinished"],
        "unfinished_trips_peak_actuated": by[("peak", "sumo-actuated")]["unfinished"],
        "unfinished_trips_peak_static": by[("peak", "sumo-static")]["unfinished"],
        **score_alerts(runs),
        **rt,
        "inprocess_sim_speedup": statistics.fmean(
            r["sim_s"] / r["wall_s"]
            for r in runs
            if r["kind"] == "max-pressure" and r["load"] == "moderate"
        ),
        "seeds": list(seeds),
        "demand_s": demand_s,
        "control_wall_s": control_wall,
        "table": table,
    }
    for row in table:
        print(
            f"{row['load']:>8} {row['controller']:>17}: waiting {row['mean_waiting_s']:7.2f} s, "
            f"trip {row['mean_trip_s']:7.2f} s, unfinished {row['unfinished']}"
        )
    RESULTS.mkdir(exist_ok=True)
    name = "smart_city.quick.json" if opts.quick else "smart_city.json"
    (RESULTS / name).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
