"""The pipeline API, the runtime that runs it on Ray, the CLI and the shipped pipelines.

Build a graph with ``Pipeline``, check it with ``validate(nodes)``, run it with
``pipelines.testing.run_local`` (no Ray) or ``pipelines.run`` (on a Ray cluster, see ``Runtime``).
"""

from pipelines._errors import PipelineError, PipelineFileError, RuntimeFailure, ValidationError
from pipelines._graph import Edge, OperatorSpec, Pipeline, Topic
from pipelines._host import DeadLetter
from pipelines._launch import launch, run_anywhere
from pipelines._placement import Node, Placement
from pipelines._runtime import Runtime, run
from pipelines._summary import EdgeAccount, RunSummary
from pipelines._validate import validate

__all__ = [
    "DeadLetter",
    "Edge",
    "EdgeAccount",
    "Node",
    "OperatorSpec",
    "Pipeline",
    "PipelineError",
    "PipelineFileError",
    "Placement",
    "RunSummary",
    "Runtime",
    "RuntimeFailure",
    "Topic",
    "ValidationError",
    "launch",
    "run",
    "run_anywhere",
    "validate",
]
