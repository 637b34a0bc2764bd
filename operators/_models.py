"""How an operator opens its model: a file path, or a registry reference through ``ctx.models``.

>>> from models.inference import ModelSignature
>>> sig = ModelSignature(input_name="x", shape=(1,), dtype="float32", output_name="y")
>>> open_model("detector@stable", sig, Context(operator="det"))  # doctest: +ELLIPSIS
Traceback (most recent call last):
  ...
operators._errors.OperatorError: operator 'det': model 'detector@stable' is a registry reference ...
"""

from __future__ import annotations

import pathlib
from typing import Any

from models.inference import ModelSignature, open_session
from models.registry import Manifest, ModelRef
from operators._errors import OperatorError
from operators._operator import Context


def open_model(
    model: str, signature: ModelSignature, ctx: Context, *, intra_op_threads: int = 1
) -> tuple[Any, Manifest | None]:
    """``(session, manifest)`` for ``model``: a file that exists (or anything that is not
    ``NAME@VERSION|ALIAS``) is opened directly (``manifest`` None), a reference through the
    context's model resolver (node cache, sha256 checked). Either way the session must fit
    ``signature`` (``SignatureMismatch`` otherwise)."""
    path = pathlib.Path(model)
    if path.exists() or not ModelRef.looks_like(model):
        session = open_session(path, intra_op_threads=intra_op_threads)
        signature.check(session, model=path)
        return session, None
    ref = ModelRef.parse(model)  # BadModelRef, with an example, for a malformed one
    if ctx.models is None:
        raise OperatorError(
            f"model {model!r} is a registry reference but this context has no model resolver; "
            "run the operator in a pipeline (Pipeline(..., models=REGISTRY)) or pass "
            "Context(models=ModelResolver.at(REGISTRY)), or give a file path",
            operator=ctx.operator,
        )
    manifest, session = ctx.models.session(ref, signature, intra_op_threads=intra_op_threads)
    return session, manifest
