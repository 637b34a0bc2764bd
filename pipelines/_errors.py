"""Exceptions of the pipeline layer (tree in ``models._errors``)."""

from __future__ import annotations

from models import EdgerayError


class PipelineError(EdgerayError):
    """A pipeline definition is wrong."""


class ValidationError(PipelineError):
    """A graph rejected before anything runs; ``problems`` lists every defect found."""

    def __init__(self, pipeline: str, problems: list[str]) -> None:
        self.pipeline = pipeline
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"pipeline {pipeline!r} is invalid:\n{lines}")


class PipelineFileError(PipelineError):
    """A pipeline file that cannot be loaded (e.g. it has no ``build()``)."""


class RuntimeFailure(EdgerayError):
    """The runtime could not run a pipeline (no cluster reachable, an actor unplaceable, ...)."""
