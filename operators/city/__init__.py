"""The smart-city operators: a SUMO city in the loop, roadside sensing and control, the hub.

``SumoCity`` (source: steps Eclipse SUMO, emits per-intersection detector readings and
air quality on the simulation clock, applies signal commands fed back to it),
``IoTDeviceManager`` (sensor registry, heartbeats, sanity checks), ``QueueFlowEstimator``,
``TrafficSignalController`` (policies in ``operators.city.policies``: fixed-time
passthrough, Webster, max-pressure), ``PublicSafety`` (incidents and clearance plans),
``EnvironmentalMonitor`` (PM2.5 / NO2 episodes), ``RoadsideUnit`` (those of one
roadside node chained in one replica), and on the hub ``CityCoordinator``
(common cycle, green-wave offsets) and ``AlertSystem``. Scenarios are generated with
SUMO's own tools by ``operators.city.scenario``.
"""

from operators.city._air import Episode
from operators.city._errors import CityError, ScenarioError, SumoStartError, UnknownIntersection
from operators.city.alerts import AlertSystem
from operators.city.controller import TrafficSignalController
from operators.city.coordination import CityCoordinator
from operators.city.devices import IoTDeviceManager
from operators.city.environment import EnvironmentalMonitor
from operators.city.estimator import QueueFlowEstimator
from operators.city.roadside import RoadsideUnit
from operators.city.safety import PublicSafety
from operators.city.scenario import Scenario, ScenarioFiles, generate
from operators.city.sim import Incident, SumoCity, read_statistics, sumo_command

__all__ = [
    "AlertSystem",
    "CityCoordinator",
    "CityError",
    "EnvironmentalMonitor",
    "Episode",
    "Incident",
    "IoTDeviceManager",
    "PublicSafety",
    "QueueFlowEstimator",
    "RoadsideUnit",
    "Scenario",
    "ScenarioError",
    "ScenarioFiles",
    "SumoCity",
    "SumoStartError",
    "TrafficSignalController",
    "UnknownIntersection",
    "generate",
    "read_statistics",
    "sumo_command",
]
