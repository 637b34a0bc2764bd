"""The layer rules and the public surface.

* ``operators`` and ``models`` never import Ray, nor the layers above them
  (checked in a fresh interpreter, importing every module under them).
* Each package's ``__all__`` is exactly what it exports (httpx's
  ``test_exported_members``): every name in it exists, it is sorted the way
  ruff sorts ``__all__`` (constants, classes, then functions), and every public
  name the package re-exports from its ``_modules`` is listed.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

#: Imports every module under the given packages, one at a time, and reports for
#: each forbidden top-level module the first import that brought it in.
PROBE = r"""
import importlib, json, pkgutil, sys

packages, forbidden = sys.argv[1].split(","), sys.argv[2].split(",")
culprits, failed, imported = {}, {}, []

def note(name):
    for top in forbidden:
        if top in sys.modules and top not in culprits:
            culprits[top] = name

def walk_error(name):
    failed[name] = repr(sys.exc_info()[1])

for package in packages:
    module = importlib.import_module(package)
    imported.append(package)
    note(package)
    for info in pkgutil.walk_packages(module.__path__, package + ".", onerror=walk_error):
        try:
            importlib.import_module(info.name)
        except Exception as err:
            failed[info.name] = repr(err)
            continue
        imported.append(info.name)
        note(info.name)

print(json.dumps({"culprits": culprits, "failed": failed, "imported": imported}))
"""


def probe(packages: list[str], forbidden: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(packages), ",".join(forbidden)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"the import probe failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("packages", "forbidden"),
    [
        (["models"], ["ray", "operators", "pipelines", "cluster"]),
        (["operators", "models"], ["ray", "pipelines", "cluster"]),
    ],
    ids=["models", "operators+models"],
)
def test_lower_layers_never_import_ray_nor_the_layers_above(packages, forbidden):
    # execute
    found = probe(packages, forbidden)

    # assert
    assert found["failed"] == {}, f"modules that do not import: {found['failed']}"
    assert set(packages) <= set(found["imported"])
    assert found["culprits"] == {}, (
        "a lower layer imported a module it must never import (first import that brought it "
        f"in): {found['culprits']}; move that code up a layer or import it lazily where used"
    )


# -- __all__ ---------------------------------------------------------------------------------------
def ruff_all_order(name: str) -> tuple[int, str]:
    """RUF022's "isort-style" order: SCREAMING_CASE, then CamelCase, then everything else."""
    if len(name) > 1 and name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


PACKAGES = ["models", "operators", "pipelines", "cluster"]
#: Public modules that declare an ``__all__`` of their own.
MODULES = ["pipelines.testing"]


def public_names(module: types.ModuleType) -> set[str]:
    """What the module exposes: public names that are not submodules."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


@pytest.mark.parametrize("name", PACKAGES + MODULES)
def test_every_name_in_all_exists(name):
    # prepare
    module = importlib.import_module(name)

    # execute
    missing = [n for n in module.__all__ if not hasattr(module, n)]

    # assert
    assert missing == [], f"{name}.__all__ lists names it does not define: {missing}"


@pytest.mark.parametrize("name", PACKAGES + MODULES)
def test_all_is_sorted_and_has_no_duplicates(name):
    # prepare
    exported = list(importlib.import_module(name).__all__)

    # execute / assert
    assert len(exported) == len(set(exported)), f"{name}.__all__ has duplicates"
    assert exported == sorted(exported, key=ruff_all_order), (
        f"{name}.__all__ is not sorted; run `ruff check --select RUF022 --fix` on it"
    )


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_exactly_what_the_package_exports(name):
    # prepare
    package = importlib.import_module(name)

    # execute
    exported = set(package.__all__)
    public = public_names(package)

    # assert
    assert public - exported == set(), (
        f"{name} re-exports {sorted(public - exported)} but leaves them out of __all__; "
        "add them, or import them under a _private name"
    )
    assert exported - public == set()


@pytest.mark.parametrize("name", PACKAGES)
def test_exported_classes_and_functions_are_defined_in_the_package(name):
    # prepare
    package = importlib.import_module(name)

    # execute
    foreign = {
        n: value.__module__
        for n in package.__all__
        if isinstance(value := getattr(package, n), type | types.FunctionType)
        and not value.__module__.startswith(f"{name}.")
    }

    # assert
    assert foreign == {}, f"{name}.__all__ re-exports names defined elsewhere: {foreign}"


def test_base_exception_is_shared_by_every_layer():
    # prepare
    import models
    import operators
    import pipelines

    # execute / assert
    for error in (
        operators.OperatorError,
        operators.PayloadConversionError,
        operators.MalformedMessage,
        pipelines.PipelineError,
        pipelines.ValidationError,
        pipelines.PipelineFileError,
        pipelines.RuntimeFailure,
    ):
        assert issubclass(error, models.EdgerayError), error
