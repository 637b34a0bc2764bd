"""``edgeray eval lanes DIR``: pixel scores, the simulator-made dataset, the CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pipelines.cli import main
from pipelines.eval_lanes import LaneEvalError, evaluate_lanes, score_image
from pipelines.lane_dataset import write_lane_dataset


@pytest.fixture(scope="module")
def sim_set(tmp_path_factory):
    return write_lane_dataset(tmp_path_factory.mktemp("lanes"), every=45, max_per_scenario=5)


def test_score_counts_pixels_within_the_tolerance():
    mask = np.zeros((20, 20), np.uint8)
    mask[:, 5] = 255
    detected = np.zeros_like(mask)
    detected[:10, 7] = 255  # 2 px off: within 3 px
    detected[:10, 15] = 255  # 10 px off: a false positive

    s = score_image(detected, mask, tolerance_px=3)

    # mask rows 0..11 have a detected pixel within 3 px (row 11: sqrt(2^2 + 2^2) = 2.8)
    assert (s.detected, s.detected_hit, s.mask, s.mask_hit) == (20, 10, 20, 12)


def test_dataset_layout(sim_set):
    images = sorted(p.name for p in (sim_set / "image").glob("*.png"))
    masks = sorted(p.name for p in (sim_set / "gt_binary_image").glob("*.png"))

    assert images == masks and len(images) == 10
    mask = cv2.imread(str(sim_set / "gt_binary_image" / masks[0]), cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(mask)) == {0, 255}
    assert set(json.loads((sim_set / "camera.json").read_text())) == {"K", "T_cam_ego"}


def test_eval_on_the_simulator_set(sim_set):
    result = evaluate_lanes(sim_set, tolerance_px=5)
    summary = result.summary()
    print(summary)

    assert summary["images"] == 10
    assert summary["both_lines"] >= 8
    assert summary["precision"] > 0.7
    assert summary["f1"] > 0.55  # measured ~0.7 (lines fitted to 30 m, masks reach ~60 m)


def test_cli_prints_a_table_and_a_last_line_json(sim_set, capsys):
    assert main(["eval", "lanes", str(sim_set), "--tolerance", "4"]) == 0

    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["tolerance_px"] == 4.0 and 0 < summary["f1"] <= 1
    assert lines[0].split()[:2] == ["image", "lines"]
    assert "F1" in lines[-2]


def test_cli_on_a_folder_without_images(tmp_path, capsys):
    assert main(["eval", "lanes", str(tmp_path)]) == 1
    assert "no PNG images in" in capsys.readouterr().err


def test_missing_mask_is_named(sim_set, tmp_path):
    (tmp_path / "image").mkdir()
    cv2.imwrite(str(tmp_path / "image" / "a.png"), np.zeros((8, 8, 3), np.uint8))

    with pytest.raises(LaneEvalError, match=r"gt_binary_image/a.png"):
        evaluate_lanes(tmp_path)
