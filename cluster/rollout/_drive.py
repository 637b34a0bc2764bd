"""``drive``: the reconcile loop that feeds a planner what an executor observes.

Each round observes, asks the planner for actions and hands them to the
executor in order; a round that only waits sleeps ``poll_s`` (``sleep`` is
injected so tests step a fake clock instead). Returns the ``Finish`` action
and the log of every action carried out.
"""

from __future__ import annotations

from collections.abc import Callable

from cluster.rollout._actions import Action, Executor, Finish, Planner, Start, Stop, Switch, Wait


def drive(
    planner: Planner,
    executor: Executor,
    *,
    sleep: Callable[[float], None],
    poll_s: float = 0.2,
    on_action: Callable[[Action], None] = lambda action: None,
) -> Finish:
    while True:
        for action in planner.plan(executor.observe()):
            on_action(action)
            if isinstance(action, Finish):
                return action
            if isinstance(action, Start):
                executor.start(action)
            elif isinstance(action, Switch):
                executor.switch(action)
            elif isinstance(action, Stop):
                executor.stop(action)
            elif isinstance(action, Wait):
                sleep(poll_s)
