"""Exceptions of the smart-city operators (the tree's root is ``models.EdgerayError``).

::

    OperatorError (operators._errors)
    └── CityError             anything about the city simulation or its operators
        ├── ScenarioError     a scenario that cannot be generated (bad shape, tool failed)
        ├── SumoStartError    SUMO refused to start; names the file it was given
        └── UnknownIntersection  an id that is not a signalised junction of the network
"""

from __future__ import annotations

from operators._errors import OperatorError


class CityError(OperatorError):
    """Something about the city simulation or its operators."""


class ScenarioError(CityError):
    """A scenario that cannot be generated."""


class SumoStartError(CityError):
    """SUMO could not load a network / route / additional file; ``path`` names it."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(
            f"SUMO failed to start with {path}: {detail}. Check that the file exists and is "
            "a SUMO file of that kind (regenerate it with operators.city.generate)"
        )


class UnknownIntersection(CityError):
    """An intersection id the network does not have."""

    def __init__(self, unknown: list[str], known: list[str], where: str) -> None:
        self.unknown = unknown
        super().__init__(
            f"{where} names intersections {unknown} that are not signalised junctions of the "
            f"network; known: {known}"
        )
