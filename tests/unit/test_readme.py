"""The README's pipeline is real: it validates and runs on the local runner over real video."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_opens_with_the_two_commands():
    head = README.read_text().splitlines()[:6]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_readme_pipeline_runs_on_the_local_runner(requires_data, tmp_path, monkeypatch):
    video = requires_data("lanes-udacity", "p1", "test_videos", "solidWhiteRight.mp4")
    monkeypatch.chdir(tmp_path)
    definition, usage = readme_blocks()[:2]
    namespace: dict = {"__name__": "my_lanes"}
    exec(definition.replace('"clip.mp4"', repr(str(video))), namespace)
    exec(usage.replace("build()", "namespace['build']()"), {"namespace": namespace})
    from pipelines.testing import run_local

    run = run_local(namespace["build"]())
    assert run.summary.sources == {"camera": 221}
    assert len(run.sink("recorder")) > 200  # frames where both lines were found
    assert run.summary.identity_holds()
