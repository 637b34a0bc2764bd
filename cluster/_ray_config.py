"""The Ray system settings every edgeray fleet runs with (the head's ``_system_config``,
which Ray hands on to every node that joins it).

- Fast failure detection (RAY-NOTES.md): a dead node is noticed in ~1 s instead of ~15 s.
- ``worker_niceness`` 0: Ray's default, 15, lowers every worker process (every operator
  replica) below Ray's own daemons and anything else on the machine at nice 0, so on a
  node whose cores the stream shares the raylet's and the GCS's work for a side job
  (a federated round's object transfers, a new replica's registration) weighs 28 times
  as much as an operator. An edge node is there to run its stream: edgeray gives the
  stream's replicas the same standing as Ray's daemons, and lowers only what should
  give way (``Resources(niceness=N)``, trainers under ``SCHED_IDLE``, a new replica's
  boot, ``pipelines._replica_start``). Measured on the 2-core machine, one run each
  (README, Rollouts and Federated): the live p99 beside federated rounds 1.20x alone
  (1.45x with Ray's default), a rolling upgrade's 1.35x steady state (2.03x).
"""

from __future__ import annotations

FAST_HEALTH_CHECKS = {
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
    "health_check_initial_delay_ms": 0,
}

#: Niceness Ray gives every worker process (Ray's own default: 15).
WORKER_NICENESS = 0

SYSTEM_CONFIG = {**FAST_HEALTH_CHECKS, "worker_niceness": WORKER_NICENESS}
