"""Load a pipeline definition file: an ordinary module with ``build() -> Pipeline``.

A pipeline file also has a ``__main__`` block, so ``python x.py`` and plain
``ray job submit -- python x.py`` run it too; ``edgeray run`` / ``edgeray submit``
only need ``build()``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from pipelines._errors import PipelineFileError

EXPECTED_SHAPE = """\
    from pipelines import Pipeline

    def build() -> Pipeline:
        p = Pipeline("my-pipeline")
        ...
        return p

    if __name__ == "__main__":
        from pipelines._runtime import run
        print(run(build()))"""


def load_pipeline_module(path: str | Path) -> ModuleType:
    """Import ``path`` as a module (not as ``__main__``) and return it; it must define build()."""
    p = Path(path)
    if not p.is_file():
        raise PipelineFileError(f"pipeline file {p}: no such file")
    if p.suffix != ".py":
        raise PipelineFileError(f"pipeline file {p}: expected a Python file (*.py)")
    name = f"_edgeray_pipeline_{p.stem}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise PipelineFileError(f"pipeline file {p}: Python cannot import it")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    if not callable(getattr(module, "build", None)):
        sys.modules.pop(name, None)
        raise PipelineFileError(
            f"pipeline file {p} has no build() function; a pipeline file is a module "
            f"shaped like this:\n{EXPECTED_SHAPE}"
        )
    return module
