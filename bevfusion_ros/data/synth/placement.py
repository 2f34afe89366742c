"""Placing agents: weighted choices, footprint overlap tests, vehicle groups (a truck with its trailer), and
the collector that refuses static agents overlapping the static world or each other."""
from __future__ import annotations

import numpy as np

from bevfusion_ros.data.synth.agents import Agent, build_parts, make_agent
from bevfusion_ros.data.synth.world import City


def choice(rng, table) -> str:
    names, weights = zip(*table)
    weights = np.asarray(weights) / np.sum(weights)
    return str(names[rng.choice(len(names), p=weights)])


def rect_corners(box) -> np.ndarray:
    x, y, _, length, width, _, yaw = box[:7]
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[length, width], [length, -width], [-length, -width], [-length, width]]) / 2
    return np.stack([x + c * local[:, 0] - s * local[:, 1], y + s * local[:, 0] + c * local[:, 1]], 1)


def rects_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quads (4x2 corners)."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() <= pb.min() or pb.max() <= pa.min():
                return False
    return True


class Placer:
    """Collects agents, refusing static ones that overlap the static world or other static agents."""

    def __init__(self, city: City, centre: np.ndarray, radius: float):
        boxes = city.statics.boxes
        near = np.hypot(boxes[:, 0] - centre[0], boxes[:, 1] - centre[1]) < radius
        self.static_array = boxes[near]
        self.static_bottom = self.static_array[:, 2] - self.static_array[:, 5] / 2
        self.static_rects = [rect_corners(b) for b in self.static_array]
        self.agents: list[Agent] = []
        self.boxes: list[np.ndarray] = []
        self.rects: list[np.ndarray] = []

    def free(self, box: np.ndarray, margin: float = 0.25) -> bool:
        grown = box.copy()
        grown[3:5] += 2 * margin
        rect = rect_corners(grown)
        reach = np.hypot(grown[3], grown[4]) / 2
        for boxes, rects in ((self.static_array, self.static_rects), (self.agent_array(), self.rects)):
            if not len(rects):
                continue
            near = np.hypot(boxes[:, 0] - box[0], boxes[:, 1] - box[1]) < reach + np.hypot(boxes[:, 3], boxes[:, 4]) / 2
            if boxes is self.static_array:
                near &= self.static_bottom < box[5]          # tree crowns above the object do not count
            for i in np.nonzero(near)[0]:
                if rects_overlap(rect, rects[i]):
                    return False
        return True

    def agent_array(self) -> np.ndarray:
        return np.array(self.boxes).reshape(-1, 7)

    def add(self, agent: Agent, check: bool = True) -> bool:
        box = agent.box(0.0)
        if check and not self.free(box):
            return False
        self.agents.append(agent)
        if agent.speed == 0.0:
            self.boxes.append(box)
            self.rects.append(rect_corners(box))
        return True


def vehicle_group(rng, category: str, start, heading: float, speed: float, state: str, required=False) -> list[Agent]:
    """One vehicle (or a truck with its trailer) heading `heading` with its centre at `start`."""
    if category == "truck+trailer":
        trailer = make_agent("vehicle.trailer", rng, start, heading, speed, state, required=required)
        tl = trailer.size[0]
        truck = make_agent("vehicle.truck", rng, (0, 0), heading, speed, state, required=required)
        truck.size[0] = min(truck.size[0], 6.0)
        truck.parts = build_parts(truck, rng)
        offset = (tl / 2 + truck.size[0] / 2 + 0.4)
        truck.start = np.asarray(start, np.float64) + offset * np.array([np.cos(heading), np.sin(heading)])
        return [trailer, truck]
    ridden = category in ("vehicle.motorcycle", "vehicle.bicycle") and state != "parked"
    return [make_agent(category, rng, start, heading, speed, state, ridden=ridden, required=required)]


def group_length(agents: list[Agent]) -> float:
    return sum(a.size[0] for a in agents) + 0.4 * (len(agents) - 1)
