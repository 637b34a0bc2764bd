"""``SumoCity`` and the closed loop on real (short) SUMO runs, without Ray.

Scenarios are generated into the test's temporary directory with SUMO's own tools; each
run covers a few hundred simulated seconds. libsumo holds one simulation per process, so
every test tears its source down before the next starts one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from operators import Context, Message
from operators.city import (
    Incident,
    RoadsideUnit,
    Scenario,
    ScenarioError,
    SumoCity,
    SumoStartError,
    UnknownIntersection,
    generate,
)
from operators.city.closed_loop import run_closed_loop, run_sumo
from operators.city.scenario import ScenarioFiles
from operators.parquet_sink import read_parquet_dir
from pipelines import ValidationError
from pipelines.smart_city import UNITS, build
from pipelines.testing import run_local

#: The pipeline's default split of the grid: one roadside unit per column.
UNITS_BY_JUNCTION = {j: u for u, js in UNITS.items() for j in js}
#: One isolated 4-arm junction with a west-east peak: the quickest closed loop.
ISOLATED = Scenario(rows=1, cols=1, period_s=4.0, peak_vph=500.0, demand_s=400, seed=2)


@pytest.fixture
def city(tmp_path):
    """``city(scenario, **kw)``: a set-up ``SumoCity`` on files generated in ``tmp_path``."""
    started = []

    def make(scenario: Scenario = ISOLATED, **kw) -> SumoCity:
        src = SumoCity(scenario, files=generate(scenario, tmp_path), **kw)
        src.setup(Context(operator="sim"))
        started.append(src)
        return src

    yield make
    for src in started:
        src.teardown()


def steps(src: SumoCity, n: int) -> list[tuple[str, Message]]:
    out = []
    for _ in range(n):
        out += list(src.poll(0) or ())
    return out


def junction_readings(out: list[tuple[str, Message]]) -> list[dict]:
    """The per-junction readings inside the unit messages of ``out``, in order."""
    return [r for p, m in out if p == "readings" for r in m.payload["junctions"].values()]


def command(junction: str, phase: int, mode: str = "adaptive") -> Message:
    return Message("control", 0, 0, {"intersection": junction, "phase": phase, "mode": mode})


def test_the_grid_has_nine_signalised_junctions_read_on_the_simulation_clock(city):
    # prepare
    src = city(Scenario(demand_s=300, seed=4), controlled=False, units=UNITS_BY_JUNCTION)

    # execute
    out = steps(src, 2)

    # assert: one message per roadside unit and step, carrying each junction it serves
    units = [m for p, m in out if p == "readings"]
    assert [m.payload["unit"] for m in units] == ["rsu-west", "rsu-center", "rsu-east"] * 2
    assert {m.event_ts for m in units} == {1_000_000_000, 2_000_000_000}
    readings = junction_readings(out)
    assert sorted({r["intersection"] for r in readings}) == list(src.scenario.intersections())
    assert all(r["unit"] == UNITS_BY_JUNCTION[r["intersection"]] for r in readings)
    assert all(r["serves"].shape == (2, 4) for r in readings)  # two greens, four arms
    assert all(r["serves"].any(axis=0).all() for r in readings)  # every arm gets green
    assert [p for p, _ in out].count("status") == 2


def test_a_command_takes_over_the_junction_through_its_yellow(city):
    # prepare
    src = city(controlled=True)
    steps(src, 2)
    assert junction_readings(src.poll(0))[0]["phase"] == 0

    # execute: ask for the other green, then keep asking (as a controller does every step)
    phases = []
    for _ in range(60):
        list(src.process("commands", command("A0", 1)))
        phases += [r["phase"] for r in junction_readings(src.poll(0))]

    # assert: a 3 s change interval (-1), then phase 1 held past its 42 s program time
    assert phases[:3] == [-1, -1, -1] or phases[:4] == [-1, -1, -1, 1][: len(phases[:4])]
    assert set(phases[4:]) == {1}


def test_a_silent_controller_hands_the_junction_back_to_fixed_time_and_alerts(city):
    # prepare
    src = city(controlled=True, command_timeout_s=10.0)
    list(src.process("commands", command("A0", 0)))

    # execute: no commands for 60 s, then one again
    out = steps(src, 60)
    restored = list(src.process("commands", command("A0", 0)))
    phases = {r["phase"] for r in junction_readings(out)}

    # assert
    alerts = [m.payload for p, m in out if p == "alerts"]
    assert [(a["kind"], a["intersection"], a["severity"]) for a in alerts] == [
        ("controller_lost", "A0", "high")
    ]
    assert alerts[0]["t_s"] == pytest.approx(11.0, abs=1.0)
    assert phases == {0, -1, 1}  # SUMO's own program cycles on (42 s greens)
    assert [m.payload["kind"] for _, m in restored] == ["controller_restored"]
    assert src.snapshot()["lost"] == {}


def test_a_stopped_vehicle_is_detected_and_alerted_by_the_closed_loop(tmp_path):
    # prepare: a vehicle stops on the west approach (lane 1: left0A0_0) at t=150 for 200 s
    incident = Incident("A0", 150.0, 200.0, lane=1)
    files = generate(ISOLATED, tmp_path)

    # execute
    out = run_closed_loop(ISOLATED, "max-pressure", files=files, incidents=[incident])

    # assert: alerted while the lane is blocked, cleared once it moves again (a later
    # alert, if any, is about another lane: SUMO's own junction deadlocks look the same)
    lane1 = [a for a in out.alerts if "lane 1 " in a["detail"]]
    assert [(a["kind"], a["intersection"]) for a in lane1] == [
        ("incident", "A0"),
        ("incident_cleared", "A0"),
    ]
    assert 150.0 < lane1[0]["t_s"] < 350.0 < lane1[1]["t_s"]
    assert lane1[0]["severity"] == "critical"


def test_max_pressure_waits_less_than_sumo_fixed_time_on_the_isolated_junction(tmp_path):
    # prepare
    files = generate(ISOLATED, tmp_path)

    # execute
    ours = run_closed_loop(ISOLATED, "max-pressure", files=files)
    fixed = run_sumo(ISOLATED, files=files)

    # assert: same demand, every trip done, far less waiting
    assert ours.statistics["trips"] == fixed.statistics["trips"] > 100
    assert ours.statistics["unfinished"] == fixed.statistics["unfinished"] == 0
    assert ours.statistics["mean_waiting_s"] < 0.8 * fixed.statistics["mean_waiting_s"]


def test_restore_replays_the_signal_changes_and_carries_on_identically(tmp_path):
    # prepare: one run takes commands; a second starts fresh and restores its snapshot
    scenario = replace(ISOLATED, demand_s=120)
    files = generate(scenario, tmp_path)
    a = SumoCity(scenario, files=files, backend="traci")
    b = SumoCity(scenario, files=files, backend="traci")
    a.setup(Context())
    b.setup(Context())
    try:
        for t in range(30):
            list(a.process("commands", command("A0", 1 if t > 5 else 0)))
            a.poll(0)

        # execute
        b.restore(a.snapshot())
        next_a = junction_readings(a.poll(0))
        next_b = junction_readings(b.poll(0))
    finally:
        a.teardown()
        b.teardown()

    # assert
    assert len(a.snapshot()["log"]) >= 2
    for x, y in zip(next_a, next_b, strict=True):
        assert x["phase"] == y["phase"] == 1
        assert np.array_equal(x["vehicles"], y["vehicles"])
        assert np.array_equal(x["halting"], y["halting"])


def test_sumo_failing_to_start_names_the_file(tmp_path):
    # prepare: a network file that is not a network
    files = generate(ISOLATED, tmp_path)
    bad = tmp_path / "broken.net.xml"
    bad.write_text("<net><edge id=")
    src = SumoCity(ISOLATED, files=ScenarioFiles(bad, files.routes, files.detectors))

    # execute / assert
    with pytest.raises(SumoStartError, match=r"SUMO failed to start with .*broken\.net\.xml"):
        src.setup(Context())
    missing = SumoCity(
        ISOLATED, files=ScenarioFiles(tmp_path / "nowhere.net.xml", files.routes, files.detectors)
    )
    with pytest.raises(SumoStartError, match=r"nowhere\.net\.xml: no such file"):
        missing.setup(Context())


def test_an_unknown_intersection_is_a_validation_error():
    # execute / assert: in the pipeline definition, and in the source itself
    with pytest.raises(ValidationError, match=r"units names intersections \['Q7'\]"):
        build(units={"rsu-1": ("A0", "Q7")})
    with pytest.raises(UnknownIntersection, match=r"\['Z9'\] .* known: \['A0'\]"):
        SumoCity(ISOLATED, units={"Z9": "rsu"}).setup(Context())


def test_a_scenario_with_an_unknown_signal_type_is_refused():
    with pytest.raises(ScenarioError, match=r"tls_type='smart'; use one of"):
        Scenario(tls_type="smart")


def test_a_command_for_a_junction_the_city_lacks_is_refused(city):
    # prepare
    src = city()

    # execute / assert: refused whole, before any junction of the batch is touched
    batch = Message("rsu", 0, 0, {"intersection": np.array(["A0", "Q7"]), "phase": [1, 0]})
    with pytest.raises(UnknownIntersection, match=r"a signal command names intersections \['Q7'\]"):
        list(src.process("commands", batch))
    assert src.snapshot()["last_command"] == {}


def test_losing_a_roadside_unit_hands_only_its_junctions_to_fixed_time(tmp_path):
    # prepare: the grid with one roadside unit per column, each a RoadsideUnit; the east
    # unit's messages stop reaching it at t=60 (its node is gone)
    scenario = Scenario(demand_s=300, seed=4)
    src = SumoCity(scenario, files=generate(scenario, tmp_path), units=UNITS_BY_JUNCTION,
                   command_timeout_s=10.0)  # fmt: skip
    units = {u: RoadsideUnit() for u in UNITS}
    src.setup(Context(operator="sim"))
    alerts, modes = [], {}
    try:
        # execute
        for _ in range(120):
            for port, m in src.poll(0):
                if port == "alerts":
                    alerts.append(m.payload)
                lost = m.payload.get("unit") == "rsu-east" and m.payload["t_s"] > 60
                if port != "readings" or lost:
                    continue
                for p, out in units[m.payload["unit"]].process(port, m):
                    if p == "commands":
                        list(src.process("commands", out))
                    elif p == "decisions":
                        modes[out.payload["intersection"]] = (
                            out.payload["t_s"],
                            out.payload["mode"],
                        )
    finally:
        src.teardown()

    # assert: a high alert for each east junction once its controller is silent, none for
    # the others, which kept sending adaptive commands to the end
    assert sorted((a["kind"], a["intersection"], a["severity"]) for a in alerts) == [
        ("controller_lost", j, "high") for j in UNITS["rsu-east"]
    ]
    assert all(60 < a["t_s"] <= 72 for a in alerts)
    assert src.snapshot()["lost"].keys() == set(UNITS["rsu-east"])
    for j in UNITS["rsu-west"] + UNITS["rsu-center"]:
        assert modes[j][1] == "adaptive" and modes[j][0] >= 115, (j, modes[j])


def test_the_pipeline_runs_its_closed_loop_in_one_process(tmp_path):
    # prepare: the whole pipeline (sim, three roadside units, hub) on a 120 s horizon
    scenario = Scenario(demand_s=300, seed=4)
    files = generate(scenario, tmp_path)
    p = build(scenario=scenario, files=files, out_dir=tmp_path / "out", realtime=False,
              end_s=120.0, log_rows_per_file=10)  # fmt: skip

    # execute
    run = run_local(p)

    # assert: every junction was decided for and commanded, none fell back, nothing lost
    rows = [m.payload for m in read_parquet_dir(tmp_path / "out" / "dashboard")]
    assert {r["intersection"] for r in rows} == set(scenario.intersections())
    assert {r["mode"] for r in rows} == {"adaptive"}
    status = [m.payload for m in read_parquet_dir(tmp_path / "out" / "status_log")]
    assert max(s["t_s"] for s in status) == 120.0
    assert max(s["fallback"] for s in status) == 0
    assert sum(len(s["latency_ms"]) for s in status) > 0  # commands were applied
    assert run.dead_letters == []
    assert run.summary.identity_holds(), run.summary.format()
