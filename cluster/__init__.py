"""The edge fleet: fleet specs, local labeled Ray nodes, placement and rollout decisions."""

__all__: list[str] = []
