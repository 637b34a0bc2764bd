"""A driving-scene simulator with ground truth: world geometry, scenarios, camera, lidar, source.

``DrivingSimulator`` is the source a pipeline uses; the modules below it are pure
functions of a scenario and a time, usable on their own (e.g. to render training data).
"""

from operators.driving.camera import LANE_AHEAD, PinholeCamera, Rendered, render
from operators.driving.lidar import Lidar, scan
from operators.driving.scenarios import SCENARIOS, Lighting, Scenario, scenario
from operators.driving.source import DrivingSimulator
from operators.driving.world import (
    CLASSES,
    Actor,
    Boundary,
    Control,
    EgoState,
    Road,
    Scene,
    SceneObject,
    SignSpec,
    World,
    step_ego,
)

__all__ = [
    "CLASSES",
    "LANE_AHEAD",
    "SCENARIOS",
    "Actor",
    "Boundary",
    "Control",
    "DrivingSimulator",
    "EgoState",
    "Lidar",
    "Lighting",
    "PinholeCamera",
    "Rendered",
    "Road",
    "Scenario",
    "Scene",
    "SceneObject",
    "SignSpec",
    "World",
    "render",
    "scan",
    "scenario",
    "step_ego",
]
