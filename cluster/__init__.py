"""The edge fleet: fleet specs, local labeled Ray nodes, placement and rollout decisions.

``load_spec`` reads a fleet spec (TOML); ``LocalFleet`` runs it on this machine;
``cluster._deploy`` turns it into ``ray start`` lines and a KubeRay manifest.
"""

from cluster._errors import FleetError, FleetSpecError
from cluster._local import LocalFleet
from cluster._spec import FleetSpec, Geo, HeadSpec, Link, NodeSpec, default_spec_path, load_spec

__all__ = [
    "FleetError",
    "FleetSpec",
    "FleetSpecError",
    "Geo",
    "HeadSpec",
    "Link",
    "LocalFleet",
    "NodeSpec",
    "default_spec_path",
    "load_spec",
]
