"""The ``edgeray`` command: fleets on this machine, pipelines as Ray jobs.

    edgeray up SPEC                start SPEC's fleet here behind a supervisor
    edgeray down                   stop what ``up`` started (by pid)
    edgeray nodes                  the live fleet as a table
    edgeray env                    exports for plain Ray clients (ray job, ray list, ray.init)
    edgeray join-cmd SPEC NODE     the ``ray start`` line a real device runs
    edgeray kuberay SPEC           a KubeRay RayCluster manifest (JSON, which is YAML)
    edgeray submit PIPELINE.py     run a pipeline file as a Ray job and follow its logs
    edgeray run PIPELINE.py        run it here (RAY_ADDRESS, the fleet, or an embedded one)
    edgeray models list [NAME]     the model registry (models, or one model's versions)
    edgeray models show REF        one version's manifest (REF: NAME@VERSION or NAME@ALIAS)
    edgeray models register NAME FILE [--metrics JSON] [--parent N] [--produced-by TEXT]
    edgeray models alias NAME ALIAS VERSION
    edgeray models rm REF          remove a version (refused while an alias points at it)
    edgeray eval lanes DIR         lane pixel precision / recall / F1 (TuSimple-style folder)
    edgeray eval detect DIR        detection precision / recall / AP@0.5 per class (KITTI folder)
    edgeray eval signs DIR         sign accuracy / per-class recall / confusions (GTSRB folder)
    edgeray rollout PIPELINE OPERATOR --model REF --strategy rolling|blue-green|canary|ab
                                   move a running pipeline's replicas to a new version
    edgeray rollout status [PIPELINE]   rollouts in progress and their history
    edgeray rollout fleet REF      roll REF out to every running pipeline that uses the model
    edgeray federate SPEC --rounds N --strategy fedavg [--then canary]
                                   federated training rounds on the fleet, each round's model
                                   registered, the best handed to a canary rollout

``down``, ``nodes``, ``env``, ``submit`` and ``run`` find the fleet by name (``--fleet``,
default ``local``) in the state directory: ``--state-dir``, else ``$EDGERAY_STATE_DIR``, else
``${XDG_STATE_HOME:-~/.local/state}/edgeray/<fleet>``. ``models`` finds the registry with
``--registry PATH_OR_URI``, else ``$EDGERAY_MODELS``, else ``~/.local/share/edgeray/models``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from models import EdgerayError

DEFAULT_FLEET = "local"
JOB_STOP_WAIT_S = 15
EXIT_ERROR = 1


def main(argv: Sequence[str] | None = None) -> int:
    # Imports below name modules (cluster._spec), not package re-exports, so the command
    # also works from an editable install made before those packages had an __init__.py.
    args = _parser().parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        return args.func(args) or 0
    except EdgerayError as e:
        print(f"edgeray {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="edgeray", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str, *, fleet: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        if fleet:
            p.add_argument("--fleet", default=DEFAULT_FLEET, help="fleet name (default: local)")
            p.add_argument("--state-dir", help="the fleet's state directory")
        return p

    p = add("up", cmd_up, "start a fleet on this machine behind a supervisor")
    p.add_argument("spec", help="fleet spec, e.g. cluster/fleets/local.toml")
    p.add_argument("--state-dir", help="the fleet's state directory")
    p.add_argument("--dashboard-port", type=int, help="0 picks a free port (default: the spec's)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for it")

    add("down", cmd_down, "stop the fleet that `up` started (by pid)", fleet=True)
    add("nodes", cmd_nodes, "print the live fleet as a table", fleet=True)
    add("env", cmd_env, "print the exports plain Ray clients need", fleet=True)

    p = add("join-cmd", cmd_join, "print the `ray start` line a real device runs")
    p.add_argument("spec")
    p.add_argument("node", help="the node's name in the spec")
    p.add_argument("--address", default="HEAD_HOST:6379", help="the head's GCS address")

    p = add("kuberay", cmd_kuberay, "print a KubeRay RayCluster manifest for a spec")
    p.add_argument("spec")
    p.add_argument("--image", default=None, help="Ray container image")

    p = add("submit", cmd_submit, "submit a pipeline file as a Ray job", fleet=True)
    p.add_argument("pipeline", help="a pipeline file (a module with build())")
    p.add_argument("--address", help="job API address, e.g. http://127.0.0.1:8265")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")

    p = add("run", cmd_run, "run a pipeline file in this process", fleet=True)
    p.add_argument("pipeline")
    p.add_argument("--timeout", type=float, default=None, help="stop the run after N seconds")

    _models_parser(sub)
    _eval_parser(sub)
    from pipelines._cli_federate import register as federate_parser
    from pipelines._cli_rollout import register as rollout_parser

    rollout_parser(sub)
    federate_parser(sub)
    return ap


def _eval_parser(sub) -> None:
    group = sub.add_parser(
        "eval", help="evaluate the pipeline's models on labelled data: lanes, detect, signs",
        description="evaluate the pipeline's models on labelled data",
    )  # fmt: skip
    esub = group.add_subparsers(dest="eval_command", required=True, metavar="SUBCOMMAND")
    p = esub.add_parser(
        "lanes", help="lane pixel precision / recall / F1",
        description="DIR/image/*.png with binary masks of the same name in "
        "DIR/gt_binary_image/ (optional DIR/camera.json with K and T_cam_ego)",
    )  # fmt: skip
    p.add_argument("dir", help="the dataset folder")
    p.add_argument("--tolerance", type=float, default=5.0,
                   help="pixels: a detected pixel counts within this of a mask pixel")  # fmt: skip
    p.set_defaults(func=cmd_eval_lanes)
    p = esub.add_parser(
        "detect", help="object detection precision / recall / AP@0.5 per class",
        description="KITTI layout: DIR/image_2/*.png with labels of the same name in "
        "DIR/label_2/*.txt (DontCare ignored)",
    )  # fmt: skip
    p.add_argument("dir", help="the dataset folder")
    p.add_argument("--detector", choices=("sim", "yolox"), default="sim",
                   help="sim: the project's detector (vehicle / pedestrian / sign); "
                   "yolox: YOLOX-nano (COCO car/bus/truck: Car, person: Pedestrian)")  # fmt: skip
    p.add_argument("--score-threshold", type=float, default=0.3,
                   help="the score at which precision and recall are reported")  # fmt: skip
    p.set_defaults(func=cmd_eval_detect)
    p = esub.add_parser(
        "signs", help="traffic-sign accuracy, per-class recall, top confusions",
        description="GTSRB layout: DIR/images/ and DIR/labels.csv with at least Filename "
        "and ClassId (optional OrigWidth/OrigHeight/OrigRoi.* place the sign's box)",
    )  # fmt: skip
    p.add_argument("dir", help="the dataset folder")
    p.add_argument("--model", default=None,
                   help="ONNX classifier (default: the committed gtsrb-signs model)")  # fmt: skip
    p.set_defaults(func=cmd_eval_signs)


def cmd_eval_detect(args: argparse.Namespace) -> int:
    from pipelines.eval_detect import DETECTORS, evaluate_detections, report

    detector = DETECTORS[args.detector]()
    print(report(evaluate_detections(args.dir, detector=detector,
                                     score_threshold=args.score_threshold)))  # fmt: skip
    return 0


def cmd_eval_signs(args: argparse.Namespace) -> int:
    from operators.signs import DEFAULT_MODEL
    from pipelines.eval_signs import evaluate_signs, report

    print(report(evaluate_signs(args.dir, model=args.model or DEFAULT_MODEL)))
    return 0


def cmd_eval_lanes(args: argparse.Namespace) -> int:
    from pipelines.eval_lanes import evaluate_lanes, report

    print(report(evaluate_lanes(args.dir, tolerance_px=args.tolerance)))
    return 0


def _models_parser(sub) -> None:
    group = sub.add_parser(
        "models", help="the model registry: list|show|register|alias|rm", description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )  # fmt: skip
    msub = group.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry", help="registry path or URI (default: $EDGERAY_MODELS or "
        "~/.local/share/edgeray/models)",
    )  # fmt: skip

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        p = msub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    p = add("list", cmd_models_list, "models in the registry, or one model's versions")
    p.add_argument("name", nargs="?", help="a model name: list its versions")
    p = add("show", cmd_models_show, "one version's manifest")
    p.add_argument("ref", help="NAME@VERSION or NAME@ALIAS, e.g. detector@stable")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p = add("register", cmd_models_register, "store an ONNX file as the next version of NAME")
    p.add_argument("name")
    p.add_argument("file", help="an .onnx file")
    p.add_argument("--metrics", help="a JSON object of numbers, e.g. '{\"mAP\": 0.41}'")
    p.add_argument("--parent", type=int, help="the version this one derives from")
    p.add_argument("--produced-by", default="", help="what produced it (training run, round)")
    p = add("alias", cmd_models_alias, "point NAME@ALIAS at VERSION")
    p.add_argument("name")
    p.add_argument("alias", help="e.g. stable, canary")
    p.add_argument("version", type=int)
    p = add("rm", cmd_models_rm, "remove a version (refused while an alias points at it)")
    p.add_argument("ref", help="NAME@VERSION")


# ---------------------------------------------------------------------------- fleet


def _state_dir(args: argparse.Namespace, fleet: str) -> Path:
    from cluster._state import state_dir

    return state_dir(fleet, getattr(args, "state_dir", None))


def _require_fleet(args: argparse.Namespace):
    from cluster._control import running
    from cluster._errors import FleetError

    directory = _state_dir(args, args.fleet)
    state = running(directory)
    if state is None:
        raise FleetError(
            f"no fleet {args.fleet!r} is up (state dir {directory}); start one with "
            "`edgeray up cluster/fleets/local.toml`"
        )
    return state


def cmd_up(args: argparse.Namespace) -> int:
    from cluster._control import up
    from cluster._spec import load_spec

    spec = load_spec(args.spec)
    directory = _state_dir(args, spec.name)
    print(f"starting fleet {spec.name!r} ({len(spec.nodes)} nodes + head) ...", flush=True)
    result = up(spec, directory, dashboard_port=args.dashboard_port, timeout_s=args.timeout)
    s = result.state
    if result.already_up:
        print(f"fleet {s.fleet!r} is already up (supervisor pid {s.supervisor.pid}); left alone")
    else:
        print(f"fleet {s.fleet!r} is up (supervisor pid {s.supervisor.pid})")
    print(f"  GCS address:  {s.gcs_address}")
    print(f"  dashboard:    {s.dashboard_url}  (token: {s.token_path})")
    print(f"  state dir:    {directory}")
    print('  clients:      eval "$(edgeray env)"; `edgeray down` stops it')
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from cluster._control import down

    print(down(_state_dir(args, args.fleet)))
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cluster._local import fetch_nodes

    state = _require_fleet(args)
    nodes = fetch_nodes(state.dashboard_url, state.token())
    table = Table(title=f"fleet {state.fleet} ({state.gcs_address})")
    for col in ("node", "id", "role", "labels", "CPU", "memory", "object store", "custom", "alive"):
        table.add_column(col)
    std = {"CPU", "GPU", "memory", "object_store_memory"}
    for n in nodes:
        labels = {k: v for k, v in n.labels.items() if k not in ("edge.node", "edge.role")}
        custom = {
            k: v for k, v in n.resources.items() if k not in std and not k.startswith("node:")
        }
        table.add_row(
            n.name,
            n.node_id[:12],
            n.labels.get("edge.role", ""),
            ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            f"{n.resources.get('CPU', 0):g}",
            _gib(n.resources.get("memory", 0)),
            _gib(n.resources.get("object_store_memory", 0)),
            ",".join(f"{k}={v:g}" for k, v in sorted(custom.items())),
            "yes" if n.alive else "NO",
        )
    Console(width=200).print(table)
    return 0


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def cmd_env(args: argparse.Namespace) -> int:
    state = _require_fleet(args)
    for k, v in state.env().items():
        print(f"export {k}={shlex.quote(v)}")
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    from cluster._deploy import join_command
    from cluster._spec import load_spec

    print(join_command(load_spec(args.spec), args.node, args.address))
    return 0


def cmd_kuberay(args: argparse.Namespace) -> int:
    from cluster._deploy import RAY_IMAGE, kuberay_manifest, to_yaml
    from cluster._spec import load_spec

    sys.stdout.write(to_yaml(kuberay_manifest(load_spec(args.spec), image=args.image or RAY_IMAGE)))
    return 0


# ---------------------------------------------------------------------------- jobs


def project_root(path: Path) -> Path:
    """The nearest directory above ``path`` with a ``pyproject.toml`` (else its folder)."""
    for d in path.resolve().parents:
        if (d / "pyproject.toml").exists():
            return d
    return path.resolve().parent


def job_runtime_env(root: Path) -> dict:
    return {
        "working_dir": str(root),
        "excludes": ["*.egg-info", "__pycache__", "bench/results"],  # Ray skips .git, .venv
        "env_vars": {
            # `ray job stop` → KeyboardInterrupt in the driver, then time to drain and flush.
            "RAY_JOB_STOP_SIGNAL": "SIGINT",
            "RAY_JOB_STOP_WAIT_TIME_S": str(JOB_STOP_WAIT_S),
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            **_data_env(),
        },
    }


def _data_env() -> dict[str, str]:
    """The shared data directory, named absolutely: a job runs in a copy of the project."""
    from pipelines.data import data_path

    try:
        return {"EDGERAY_DATA": str(data_path().resolve())}
    except FileNotFoundError:
        return {}


def _job_target(args: argparse.Namespace) -> tuple[str, str | None, str]:
    """(job API address, token or None, where the address came from)."""
    from cluster._control import running

    state = running(_state_dir(args, args.fleet))
    if args.address:
        token = state.token() if state and state.dashboard_url == args.address else _env_token()
        return args.address, token, "--address"
    if state is not None:
        return state.dashboard_url, state.token(), f"fleet {state.fleet!r}"
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        if os.environ.get(var):
            return os.environ[var], _env_token(), var
    return "http://127.0.0.1:8265", _env_token(), "default"


def _env_token() -> str | None:
    if os.environ.get("RAY_AUTH_MODE") != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).read_text().strip() if path and Path(path).exists() else None


def cmd_submit(args: argparse.Namespace) -> int:
    from pipelines._errors import RuntimeFailure
    from pipelines._pipeline_file import load_pipeline_module

    path = Path(args.pipeline)
    load_pipeline_module(path)  # a file without build() fails here, before anything is sent
    address, token, source = _job_target(args)
    from ray.job_submission import JobStatus, JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        client = JobSubmissionClient(address, headers=headers)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RuntimeFailure(
            f"no Ray cluster answers at {address} (from {source}): {e}. Start one with "
            "`edgeray up cluster/fleets/local.toml`, or pass --address http://HOST:PORT"
        ) from None
    root = project_root(path)
    rel = path.resolve().relative_to(root)
    job_id = client.submit_job(
        entrypoint=f"python {shlex.quote(str(rel))}", runtime_env=job_runtime_env(root)
    )
    print(f"submitted {rel} as job {job_id} to {address}", flush=True)
    if args.no_wait:
        return 0

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    try:
        asyncio.run(follow())
    except KeyboardInterrupt:
        print(f"\nstopping job {job_id} (it drains for up to {JOB_STOP_WAIT_S} s) ...")
        client.stop_job(job_id)
        asyncio.run(follow())
    status = client.get_job_status(job_id)
    print(f"job {job_id}: {status.value}")
    return 0 if status == JobStatus.SUCCEEDED else EXIT_ERROR


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines._launch import run_anywhere
    from pipelines._pipeline_file import load_pipeline_module

    module = load_pipeline_module(args.pipeline)
    summary = run_anywhere(
        module.build(),
        timeout_s=args.timeout,
        fleet=args.fleet,
        state_dir=getattr(args, "state_dir", None),
    )
    return EXIT_ERROR if summary.unplaceable else 0


# ---------------------------------------------------------------------------- models


def _registry(args: argparse.Namespace):
    from models.registry import Registry, default_root

    return Registry(args.registry or default_root())


def cmd_models_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    registry = _registry(args)
    if args.name is None:
        table = Table(title=f"models in {registry.root}")
        for col in ("model", "versions", "latest", "aliases", "created"):
            table.add_column(col)
        for name in registry.names():
            versions = registry.versions(name)
            aliases = registry.aliases(name)
            table.add_row(
                name,
                ", ".join(str(m.version) for m in versions),
                str(versions[-1].version),
                ", ".join(f"{a}->{v}" for a, v in sorted(aliases.items())),
                versions[-1].created_at,
            )
    else:
        aliases = registry.aliases(args.name)
        table = Table(title=f"{args.name} in {registry.root}")
        for col in ("version", "aliases", "sha256", "size", "inputs", "outputs", "metrics",
                    "parent", "produced by", "created"):  # fmt: skip
            table.add_column(col)
        for m in registry.versions(args.name):
            table.add_row(
                str(m.version),
                ", ".join(a for a, v in sorted(aliases.items()) if v == m.version),
                m.sha256[:12],
                _size(m.size),
                "; ".join(t.describe() for t in m.inputs),
                "; ".join(t.describe() for t in m.outputs),
                ", ".join(f"{k}={v:g}" for k, v in sorted(m.metrics.items())),
                "" if m.parent is None else str(m.parent),
                m.produced_by,
                m.created_at,
            )
    Console(width=200).print(table)
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    registry = _registry(args)
    m = registry.resolve(args.ref)
    if args.json:
        print(m.to_json())
        return 0
    aliases = [a for a, v in sorted(registry.aliases(m.name).items()) if v == m.version]
    table = Table(title=f"{m.ref} ({args.ref}) in {registry.root}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    rows = [
        ("name", m.name), ("version", str(m.version)), ("aliases", ", ".join(aliases)),
        ("sha256", m.sha256), ("size", f"{_size(m.size)} ({m.size} bytes)"),
        ("inputs", "; ".join(t.describe() for t in m.inputs)),
        ("outputs", "; ".join(t.describe() for t in m.outputs)),
        ("metrics", ", ".join(f"{k}={v:g}" for k, v in sorted(m.metrics.items()))),
        ("parent", "" if m.parent is None else str(m.parent)),
        ("produced by", m.produced_by), ("created", m.created_at),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)
    return 0


def cmd_models_register(args: argparse.Namespace) -> int:
    import json

    from models import RegistryError

    metrics = None
    if args.metrics:
        try:
            metrics = json.loads(args.metrics)
        except json.JSONDecodeError as e:
            metrics = e
        if not isinstance(metrics, dict):
            raise RegistryError(
                f"--metrics {args.metrics!r} is not a JSON object ({metrics}); pass e.g. "
                '--metrics \'{"mAP": 0.41, "latency_ms": 12.5}\''
            )
    m = _registry(args).register(
        args.name, args.file, metrics=metrics, parent=args.parent, produced_by=args.produced_by
    )
    print(f"registered {m.ref} (sha256 {m.sha256[:12]}, {_size(m.size)})")
    return 0


def cmd_models_alias(args: argparse.Namespace) -> int:
    _registry(args).alias(args.name, args.alias, args.version)
    print(f"{args.name}@{args.alias} -> {args.name}@{args.version}")
    return 0


def cmd_models_rm(args: argparse.Namespace) -> int:
    m = _registry(args).remove(args.ref)
    print(f"removed {m.ref} (sha256 {m.sha256[:12]})")
    return 0


def _size(b: float) -> str:
    return f"{b / 2**20:.2f} MiB" if b >= 2**20 else f"{b / 2**10:.1f} KiB"


if __name__ == "__main__":
    sys.exit(main())
