"""The same fleet spec on real machines: a ``ray start`` line per device, a KubeRay manifest.

Pure functions, no Ray.

>>> from cluster._spec import parse_spec
>>> spec = parse_spec('''
... [fleet]
... name = "tiny"
... [[nodes]]
... name = "car-1"
... role = "vehicle"
... sensors = ["camera"]
... num_cpus = 2
... memory = "1GiB"
... object_store_memory = "100MB"
... resources = { camera = 1 }
... ''')
>>> print(join_command(spec, "car-1", "10.0.0.1:6379"))  # doctest: +NORMALIZE_WHITESPACE
ray start --address=10.0.0.1:6379
  --labels=edge.node=car-1,edge.role=vehicle,edge.sensor.camera=true
  --resources='{"camera": 1}' --num-cpus=2 --memory=1073741824 --object-store-memory=100000000
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from cluster._ray_config import WORKER_NICENESS
from cluster._spec import FleetSpec, NodeSpec

RAY_VERSION = "2.60.0"
RAY_IMAGE = f"rayproject/ray:{RAY_VERSION}"


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def labels_arg(labels: Mapping[str, str]) -> str:
    """Ray's ``--labels`` syntax: ``k=v`` pairs separated by commas (no quoting inside)."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def resources_arg(resources: Mapping[str, float]) -> str:
    return json.dumps({k: _num(v) for k, v in resources.items()})


def start_args(node: NodeSpec) -> dict[str, str]:
    """``ray start`` options for ``node`` (flag name without dashes → value)."""
    args = {"labels": labels_arg(node.labels)}
    if node.resources:
        args["resources"] = resources_arg(node.resources)
    args["num-cpus"] = str(_num(node.num_cpus))
    args["memory"] = str(node.memory)
    args["object-store-memory"] = str(node.object_store_memory)
    return args


def join_command(spec: FleetSpec, node_name: str, address: str) -> str:
    """The ``ray start`` line a real device runs to join the fleet as ``node_name``."""
    node = spec.node(node_name)
    args = start_args(node)
    parts = ["ray", "start", f"--address={address}"]
    parts += [f"--{k}={v}" for k, v in args.items()]
    return " ".join(_quote(p) for p in parts)


def _quote(part: str) -> str:
    if "=" in part and part.startswith("--"):
        flag, _, value = part.partition("=")
        return f"{flag}={shlex.quote(value)}"
    return shlex.quote(part)


def kuberay_manifest(spec: FleetSpec, *, image: str = RAY_IMAGE) -> dict[str, Any]:
    """A KubeRay ``RayCluster`` (``ray.io/v1``): the head, and one worker group per node role.

    Field names as KubeRay documents them (RayCluster configuration guide): ``spec.rayVersion``,
    ``spec.headGroupSpec.rayStartParams`` / ``template``, ``spec.workerGroupSpecs[]`` with
    ``groupName``, ``replicas``, ``minReplicas``, ``maxReplicas``, ``rayStartParams`` (``ray
    start`` flags without dashes, string values) and ``template`` (a pod template). A role's
    nodes share one group, so the group carries the labels they share (``edge.node`` and
    any label that differs between them is left to the pods); ``replicas`` = their count.
    """
    groups = []
    for role, nodes in spec.roles().items():
        shared = {
            k: v
            for k, v in nodes[0].labels.items()
            if k != "edge.node" and all(n.labels.get(k) == v for n in nodes)
        }
        first = nodes[0]
        params = {"labels": labels_arg(shared), "num-cpus": str(_num(first.num_cpus))}
        if first.resources:
            params["resources"] = json.dumps(resources_arg(first.resources))
        params["object-store-memory"] = str(first.object_store_memory)
        groups.append(
            {
                "groupName": _k8s_name(role),
                "replicas": len(nodes),
                "minReplicas": len(nodes),
                "maxReplicas": len(nodes),
                "rayStartParams": params,
                "template": _pod("ray-worker", image, first.num_cpus, first.memory),
            }
        )
    head = spec.head
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": _k8s_name(spec.name)},
        "spec": {
            "rayVersion": RAY_VERSION,
            # KubeRay API reference, RayClusterSpec.authOptions: token auth like `edgeray up`.
            "authOptions": {"mode": "token"},
            "headGroupSpec": {
                "serviceType": "ClusterIP",
                "rayStartParams": {
                    "dashboard-host": "0.0.0.0",
                    "num-cpus": str(round(head.num_cpus)),
                    "labels": "edge.node=head,edge.role=head",
                    # Ray hands the head's system config on to every node that joins.
                    "system-config": json.dumps({"worker_niceness": WORKER_NICENESS}),
                },
                "template": _pod("ray-head", image, max(head.num_cpus, 1), head.memory),
            },
            "workerGroupSpecs": groups,
        },
    }


def _pod(container: str, image: str, cpus: float, memory: int) -> dict[str, Any]:
    res = {"cpu": str(max(1, round(cpus))), "memory": str(memory)}
    return {
        "spec": {
            "containers": [
                {
                    "name": container,
                    "image": image,
                    "resources": {"limits": dict(res), "requests": dict(res)},
                }
            ]
        }
    }


def _k8s_name(name: str) -> str:
    return "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")


def to_yaml(doc: Any) -> str:
    """The manifest as YAML: JSON is valid YAML, and needs no extra dependency."""
    return json.dumps(doc, indent=2) + "\n"
