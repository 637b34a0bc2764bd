"""``edgeray rollout``: move the replicas of a running pipeline's operator to a new version.

::

    edgeray rollout PIPELINE OPERATOR --model detector@3 --strategy canary [options]
    edgeray rollout status [PIPELINE]
    edgeray rollout fleet detector@3 [--strategy rolling] [options]

How the command reaches a running pipeline: every run started by the runtime
(``edgeray run``, ``edgeray submit``, ``pipelines.run``) starts a rollout
controller, a Ray actor named after the pipeline in the ``edgeray-rollouts``
namespace. This command connects to the cluster (``--address``, else
``RAY_ADDRESS``, as printed by ``edgeray env``), looks the controller up by the
pipeline's name and asks it to carry the rollout out; the controller runs it on
the cluster and keeps its history, so the command may return at once
(``--no-wait``) and ``status`` shows progress from any process. ``fleet`` rolls
a model version out to every operator of every running pipeline that uses the
model, one after another, node by node with the default rolling strategy.
A pipeline called ``status`` or ``fleet`` cannot be addressed by this command.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipelines._rollout import STRATEGIES, RolloutRequest

#: Words after ``rollout`` that are commands, not pipeline names.
COMMANDS = ("status", "fleet")


def register(sub: Any) -> argparse.ArgumentParser:
    """Add ``rollout`` to the ``edgeray`` command's subparsers ``sub``."""
    p = sub.add_parser(
        "rollout", help="roll a new model / config out to a running pipeline's operator; status",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("pipeline", help="a running pipeline's name, or `status` / `fleet`")
    p.add_argument("target", nargs="?", help="the operator (for `status`: a pipeline; for "
                   "`fleet`: the model reference, e.g. detector@3)")  # fmt: skip
    p.add_argument("--address", help="the cluster's GCS address (default: $RAY_ADDRESS)")
    p.add_argument("--model", help="NAME@VERSION or NAME@ALIAS, e.g. detector@3")
    p.add_argument("--set", action="append", default=[], metavar="PARAM=JSON",
                   help="set an operator parameter, e.g. --set score_threshold=0.4")  # fmt: skip
    p.add_argument("--strategy", choices=STRATEGIES, default="rolling")
    p.add_argument("--batch", type=int, default=1, help="rolling: replicas per batch")
    p.add_argument("--interval", type=float, default=0.0,
                   help="rolling: least seconds a batch is verified before the next")  # fmt: skip
    p.add_argument("--share", type=float, help="canary / ab: share of replicas (streams)")
    p.add_argument("--duration", type=float, default=30.0, help="canary / ab: seconds")
    p.add_argument("--window", type=float, default=0.0,
                   help="blue-green: seconds the old set stays warm for a rollback")  # fmt: skip
    p.add_argument("--min-frames", type=int, default=20, help="frames before a verdict "
                   "(rolling: frames a batch's own replicas handle before the next)")  # fmt: skip
    p.add_argument("--max-error-rate", type=float, default=0.01)
    p.add_argument("--max-p99-ratio", type=float, help="candidate p99 / baseline p99 limit")
    p.add_argument("--min-quality-ratio", type=float,
                   help="candidate quality / baseline quality floor")  # fmt: skip
    p.add_argument("--quality-field", help="output payload field averaged as the quality "
                   "signal, e.g. scores (mean detection confidence)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for the end")
    p.add_argument("--no-wait", action="store_true", help="print the rollout id and return")
    p.add_argument("--json", action="store_true", help="print records as JSON")
    p.set_defaults(func=cmd_rollout)
    return p


def request_from(args: argparse.Namespace, operator: str) -> RolloutRequest:
    """The ``RolloutRequest`` the command line asks for."""
    params = {}
    for item in args.set:
        name, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--set {item!r}: expected PARAM=VALUE, e.g. score_threshold=0.4")
        params[name] = _value(value)
    return RolloutRequest(
        operator=operator, model=args.model, params=params, strategy=args.strategy,
        batch=args.batch, interval_s=args.interval, share=args.share, duration_s=args.duration,
        window_s=args.window, min_frames=args.min_frames, max_error_rate=args.max_error_rate,
        max_p99_ratio=args.max_p99_ratio, min_quality_ratio=args.min_quality_ratio,
        quality_field=args.quality_field,
    )  # fmt: skip


def cmd_rollout(args: argparse.Namespace) -> int:
    from pipelines import _rollout
    from pipelines._runtime import connect

    if args.pipeline not in COMMANDS and not args.target:
        raise SystemExit("edgeray rollout PIPELINE OPERATOR: name the operator to roll out")
    if args.pipeline == "fleet" and not args.target:
        raise SystemExit("edgeray rollout fleet MODEL@VERSION: name the model version")
    connect(args.address)
    if args.pipeline == "status":
        _print_status(_rollout.status(args.target), as_json=args.json)
        return 0
    if args.pipeline == "fleet":
        records = _rollout.fleet_update(
            args.target, request_from(args, operator=""), timeout_s=args.timeout
        )
        for record in records:
            _print_record(record, as_json=args.json)
        if not records:
            print(f"no running pipeline uses model {args.target.partition('@')[0]!r}")
        return 0 if all(r["state"] == "completed" for r in records) else 1
    record = _rollout.rollout(
        args.pipeline, request_from(args, args.target), wait=not args.no_wait,
        timeout_s=args.timeout,
    )  # fmt: skip
    _print_record(record, as_json=args.json)
    return 0 if record.get("state", "completed") in ("completed", "measured") else 1


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word: a string


def _print_record(record: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record, default=str))
        return
    if "state" not in record:
        print(f"rollout {record['id']} of {record['pipeline']}/{record['operator']} started; "
              f"follow it with `edgeray rollout status {record['pipeline']}`")  # fmt: skip
        return
    print(f"rollout {record['id']} {record['pipeline']}/{record['operator']} "
          f"({record['strategy']}): {record['baseline']} -> {record['candidate']}: "
          f"{record['state']} ({record['reason']})")  # fmt: skip
    for version, m in record.get("metrics", {}).items():
        print(f"  {version}: {m}")


def _print_status(states: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(states, default=str))
        return
    if not states:
        print("no running pipelines")
    for state in states:
        print(f"pipeline {state['pipeline']}")
        for slots in state["serving"].values():
            for s in slots:
                warm = f" (warm: {', '.join(s['warm'])})" if s["warm"] else ""
                print(f"  {s['slot']} on {s['node']}: {s['active']}{warm}")
        for record in state["rollouts"]:
            print("  ", end="")
            _print_record(record, as_json=False)
            for action in record["actions"]:
                print(f"      {action}")
