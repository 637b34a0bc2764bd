"""``Chain``: an operator that runs several operators in order inside one replica.

Between two operators on the same small computer a message would cost a Ray hop for
no gain, so a chained unit (``city.RoadsideUnit``, ``vehicle.VehiclePerception``,
``vehicle.VehicleControl``) calls its operators itself, as Flink chains operators into
one task. The operators stay separate classes with their own state; the unit routes
messages between them (its ``process``) and passes the lifecycle on to each (here).
"""

from __future__ import annotations

from typing import Any

from operators._operator import Context, Operator


class Chain(Operator):
    """Setup, teardown, snapshot and restore of every operator in ``chain``."""

    @property
    def chain(self) -> dict[str, Operator]:
        """The unit's operators by role, in the order a message meets them."""
        raise NotImplementedError

    def setup(self, ctx: Context) -> None:
        for op in self.chain.values():
            op.setup(ctx)

    def teardown(self) -> None:
        for op in self.chain.values():
            op.teardown()

    def snapshot(self) -> Any:
        return {role: op.snapshot() for role, op in self.chain.items()}

    def restore(self, state: Any) -> None:
        for role, op in self.chain.items():
            op.restore(state[role])
