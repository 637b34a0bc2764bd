"""``edgeray federate``: the spec file, the command line's overrides, clear errors."""

from __future__ import annotations

import argparse

import pytest

from models.federated import FederatedError
from pipelines import _cli_federate
from pipelines.federate import load_spec, spec_from_dict

SPEC = """
[federation]
model = "signs"
nodes = ["vehicle-1", "vehicle-2", "vehicle-3", "vehicle-4"]
data_root = "/var/lib/edgeray/signs"
num_classes = 43
rounds = 5
fraction = 0.5
deadline_s = 30
strategy = "fedprox"

[strategy]
proximal_mu = 0.05

[rollout]
pipeline = "signs-live"
operator = "classifier"
share = 0.25
"""


def parse(argv):
    parser = argparse.ArgumentParser(prog="edgeray")
    _cli_federate.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_a_toml_spec_reads_into_rounds_strategy_and_rollout(tmp_path):
    # prepare
    path = tmp_path / "signs.toml"
    path.write_text(SPEC)

    # execute
    spec = load_spec(path)

    # assert
    assert spec.nodes == ("vehicle-1", "vehicle-2", "vehicle-3", "vehicle-4")
    assert (spec.rounds.rounds, spec.rounds.fraction, spec.rounds.deadline_s) == (5, 0.5, 30)
    assert (spec.strategy, dict(spec.strategy_options)) == ("fedprox", {"proximal_mu": 0.05})
    assert spec.rollout["operator"] == "classifier"


def test_the_command_line_overrides_the_spec(tmp_path):
    # prepare
    path = tmp_path / "signs.toml"
    path.write_text(SPEC)
    args = parse(["federate", str(path), "--rounds", "9", "--strategy", "fedavg", "--secure",
                  "--then", "canary"])  # fmt: skip

    # execute
    spec = _cli_federate.spec_from_args(args)

    # assert: another strategy drops the spec's options for FedProx
    assert (spec.rounds.rounds, spec.rounds.secure, spec.strategy) == (9, True, "fedavg")
    assert dict(spec.strategy_options) == {}
    assert args.then == "canary"


def test_a_spec_missing_fields_or_with_unknown_ones_says_which():
    with pytest.raises(FederatedError, match=r"lacks \['data_root', 'num_classes'\]"):
        spec_from_dict({"federation": {"model": "m", "nodes": ["a"]}})
    with pytest.raises(FederatedError, match=r"unknown field\(s\) \['round'\]"):
        spec_from_dict({"federation": {"round": 3}})


def test_a_pipeline_file_without_federation_is_refused(tmp_path):
    path = tmp_path / "p.py"
    path.write_text("from pipelines import Pipeline\n\ndef build():\n    return Pipeline('p')\n")
    with pytest.raises(FederatedError, match="defines no FEDERATION dict"):
        load_spec(path)


def test_a_pipeline_file_s_federation_targets_its_own_pipeline(tmp_path):
    path = tmp_path / "p.py"
    path.write_text(
        "from pipelines import Pipeline\n\n"
        "FEDERATION = {'federation': {'model': 'm', 'nodes': ['a', 'b'], 'data_root': '/d',\n"
        "              'num_classes': 3}, 'rollout': {'operator': 'cls'}}\n\n"
        "def build():\n    return Pipeline('signs-live')\n"
    )
    spec = load_spec(path)
    assert dict(spec.rollout) == {"pipeline": "signs-live", "operator": "cls"}
