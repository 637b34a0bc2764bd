"""A pipeline-shaped file that runs until stopped: on `ray job stop` it must get SIGINT
(KeyboardInterrupt, as `edgeray submit` asks) and time to finish, and says DRAINED."""

from __future__ import annotations

import threading


def build():
    from pipelines import Pipeline

    return Pipeline("drain-probe")


if __name__ == "__main__":
    print("READY", flush=True)
    try:
        threading.Event().wait(120)  # until the stop signal arrives
        print("NOT STOPPED", flush=True)
    except KeyboardInterrupt:
        print("DRAINED", flush=True)
