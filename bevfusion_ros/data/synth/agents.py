"""Agents: the annotated objects of a scene (all 10 detection classes), their looks, sizes and motion.

An agent moves along a straight path (a start point, a unit heading) at constant speed, optionally
stopping after `max_travel` metres (a pedestrian reaching the curb); parked and queued agents do not
move. Its annotation box (``size`` l, w, h; centre at half height above the flat ground) encloses
`parts`: coloured, shaded sub-boxes (wheels, cabin, windows, torso, head, cone stripes ...) that the
camera renders and the LiDAR hits, so appearance differs by class for both sensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bevfusion_ros.classes import CATEGORY_TO_DETECTION
from bevfusion_ros.data.synth import semantics as sem

# Mean and standard deviation of (length, width, height) per category, from nuScenes' size statistics.
SIZE_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "vehicle.car": ((4.63, 1.96, 1.74), (0.40, 0.15, 0.22)),
    "vehicle.truck": ((6.94, 2.52, 2.85), (1.60, 0.30, 0.60)),
    "vehicle.bus.rigid": ((11.19, 2.95, 3.49), (1.40, 0.12, 0.25)),
    "vehicle.trailer": ((12.28, 2.92, 3.87), (2.50, 0.15, 0.35)),
    "vehicle.construction": ((6.46, 2.70, 3.20), (1.20, 0.25, 0.45)),
    "human.pedestrian.adult": ((0.73, 0.67, 1.77), (0.12, 0.10, 0.10)),
    "human.pedestrian.child": ((0.50, 0.48, 1.25), (0.08, 0.07, 0.12)),
    "human.pedestrian.construction_worker": ((0.75, 0.70, 1.78), (0.12, 0.10, 0.09)),
    "human.pedestrian.police_officer": ((0.73, 0.68, 1.79), (0.10, 0.08, 0.08)),
    "vehicle.motorcycle": ((2.11, 0.77, 1.47), (0.20, 0.10, 0.12)),
    "vehicle.bicycle": ((1.70, 0.61, 1.29), (0.12, 0.08, 0.10)),
    "movable_object.trafficcone": ((0.41, 0.41, 1.07), (0.06, 0.06, 0.12)),
    "movable_object.barrier": ((0.50, 2.53, 0.98), (0.08, 0.30, 0.08)),
}
SIZE_MIN = {"vehicle.car": (3.6, 1.6, 1.35), "vehicle.truck": (4.8, 2.0, 1.9)}
CAR_COLORS = np.array([[235, 235, 235], [25, 25, 28], [160, 162, 166], [110, 112, 118], [150, 25, 25],
                       [30, 55, 120], [200, 200, 205], [60, 70, 60], [120, 90, 60], [210, 170, 40]])
SHIRT_COLORS = np.array([[200, 40, 40], [40, 60, 150], [230, 230, 230], [30, 30, 30], [60, 130, 70],
                         [200, 170, 60], [120, 60, 140], [140, 140, 140], [90, 60, 40]])
SKIN = np.array([[225, 185, 150], [190, 140, 100], [140, 95, 65], [95, 65, 45]])
GLASS = (40, 50, 60)
TIRE = (25, 25, 25)


@dataclass
class Agent:
    category: str
    size: np.ndarray                  # (l, w, h)
    start: np.ndarray                 # (2,) xy at t = 0
    heading: float                    # yaw (path direction for movers)
    speed: float = 0.0                # m/s along the heading
    max_travel: float = np.inf        # stops after this distance (>= 0)
    state: str = "parked"             # parked | stopped | moving | standing | sitting | static
    ridden: bool = False              # cycles: with rider
    parts: list = field(default_factory=list)  # [(cx, cy, cz, l, w, h, (r, g, b), material)]
    required: bool = False            # part of the scene's guaranteed class set: never thinned out

    @property
    def detection_name(self) -> str:
        return CATEGORY_TO_DETECTION[self.category]

    @property
    def seg_class(self) -> int:
        return sem.NAME_TO_INDEX[self.category]

    def travel(self, t: np.ndarray | float) -> np.ndarray:
        return np.clip(self.speed * np.asarray(t, dtype=np.float64), -np.inf, self.max_travel)

    def box(self, t: float) -> np.ndarray:
        """Annotation box [x, y, z, l, w, h, yaw] at time t (seconds from the scene start)."""
        d = float(self.travel(t))
        x = self.start[0] + d * np.cos(self.heading)
        y = self.start[1] + d * np.sin(self.heading)
        return np.array([x, y, self.size[2] / 2.0, *self.size, self.heading])

    def moving_at(self, t: float) -> bool:
        return self.speed > 0.05 and float(self.travel(t)) < self.max_travel - 1e-6

    def attribute(self, t: float) -> str:
        det = self.detection_name
        if det in ("car", "truck", "bus", "trailer", "construction_vehicle"):
            if self.moving_at(t):
                return "vehicle.moving"
            return "vehicle.stopped" if self.state in ("stopped", "moving") else "vehicle.parked"
        if det == "pedestrian":
            if self.state == "sitting":
                return "pedestrian.sitting_lying_down"
            return "pedestrian.moving" if self.moving_at(t) else "pedestrian.standing"
        if det in ("bicycle", "motorcycle"):
            return "cycle.with_rider" if self.ridden else "cycle.without_rider"
        return ""

    def part_boxes(self, t: float) -> np.ndarray:
        """World boxes [P, 7] of the parts at time t."""
        box = self.box(t)
        parts = np.array([p[:6] for p in self.parts], np.float64)
        c, s = np.cos(box[6]), np.sin(box[6])
        out = np.empty((len(parts), 7))
        out[:, 0] = box[0] + c * parts[:, 0] - s * parts[:, 1]
        out[:, 1] = box[1] + s * parts[:, 0] + c * parts[:, 1]
        out[:, 2] = parts[:, 2]
        out[:, 3:6] = parts[:, 3:6]
        out[:, 6] = box[6]
        return out


def sample_size(category: str, rng: np.random.Generator) -> np.ndarray:
    mean, std = SIZE_STATS[category]
    size = np.asarray(mean) + np.asarray(std) * np.clip(rng.standard_normal(3), -2.0, 2.0)
    return np.maximum(size, SIZE_MIN.get(category, np.asarray(mean) * 0.5))


def make_agent(category: str, rng: np.random.Generator, start, heading: float, speed: float = 0.0,
               state: str = "parked", ridden: bool = False, max_travel: float = np.inf,
               required: bool = False) -> Agent:
    size = sample_size(category, rng)
    if category == "vehicle.bicycle" and not ridden:
        size[2] = min(size[2], 1.15)
    if category == "vehicle.bicycle" and ridden:
        size[2] = max(size[2], 1.65)
    if category.startswith("human.") and state == "sitting":
        size[2] = float(rng.uniform(1.1, 1.35))
        size[0] = max(size[0], 0.9)
    agent = Agent(category=category, size=size, start=np.asarray(start, np.float64), heading=float(heading),
                  speed=float(speed), state=state, ridden=ridden, max_travel=float(max_travel), required=required)
    agent.parts = build_parts(agent, rng)
    return agent


def _c(color) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(color, 0, 255))


def build_parts(agent: Agent, rng: np.random.Generator) -> list:
    """Sub-boxes in the agent frame (x forward, y left, z up from the ground), inside the annotation box."""
    length, width, height = (float(v) for v in agent.size)
    det = agent.detection_name
    parts: list = []

    def add(cx, cy, z0, z1, plen, pwid, color, material):
        parts.append((cx, cy, (z0 + z1) / 2.0, plen, pwid, z1 - z0, _c(color), material))

    def wheels(radius, xs, inset=0.05, wheel_width=0.28):
        for x in xs:
            for side in (-1, 1):
                add(x, side * (width / 2 - wheel_width / 2 - inset), 0.0, 2 * radius, 2 * radius * 0.9,
                    wheel_width, TIRE, sem.MAT_RUBBER)

    def lights(z0, z1, inset=0.25, size=0.3):
        """Head lights (front, warm white) and tail lights (rear, red): they tell front from back."""
        for side in (-1, 1):
            y = side * (width / 2 - inset)
            add(length / 2 - 0.02, y, z0, z1, 0.05, size, (250, 245, 215), sem.MAT_RETRO)
            add(-length / 2 + 0.02, y, z0, z1, 0.05, size, (200, 20, 20), sem.MAT_RETRO)

    if det == "car":
        body = CAR_COLORS[rng.integers(len(CAR_COLORS))] + rng.integers(-10, 11, 3)
        belt = 0.25 + 0.5 * (height - 0.25)
        wheels(0.33, (length * 0.33, -length * 0.33))
        add(0.0, 0.0, 0.2, belt, length, width * 0.98, body, sem.MAT_PAINTED_METAL)
        add(-length * 0.06, 0.0, belt, height - 0.06, length * 0.52, width * 0.86, GLASS, sem.MAT_GLASS)
        add(-length * 0.06, 0.0, height - 0.06, height, length * 0.48, width * 0.84, body, sem.MAT_PAINTED_METAL)
        add(length / 2 - 0.03, 0.0, 0.35, 0.5, 0.06, 0.5, (230, 230, 230), sem.MAT_RETRO)   # plate
        lights(belt - 0.22, belt - 0.06)
    elif det == "truck":
        cab = CAR_COLORS[rng.integers(len(CAR_COLORS))]
        cargo = np.array([[225, 225, 225], [180, 180, 185], [200, 60, 40], [40, 90, 160]])[rng.integers(4)]
        cab_len = min(2.2, 0.32 * length)
        wheels(0.48, (length / 2 - 1.0, -length / 2 + 1.2))
        add(length / 2 - cab_len / 2, 0.0, 0.4, height * 0.55, cab_len, width * 0.97, cab, sem.MAT_PAINTED_METAL)
        add(length / 2 - cab_len / 2 - 0.1, 0.0, height * 0.55, height * 0.82, cab_len * 0.85, width * 0.92,
            GLASS, sem.MAT_GLASS)
        add(-cab_len / 2, 0.0, 0.9, height, length - cab_len - 0.1, width, cargo, sem.MAT_PAINTED_METAL)
        lights(0.6, 0.8, inset=0.3)
    elif det == "bus":
        body = np.array([[200, 40, 40], [230, 230, 225], [40, 90, 170], [60, 140, 70]])[rng.integers(4)]
        wheels(0.5, (length / 2 - 2.4, -length / 2 + 2.8))
        add(0.0, 0.0, 0.35, height, length, width - 0.06, body, sem.MAT_PAINTED_METAL)
        add(0.0, 0.0, height * 0.45, height * 0.85, length - 0.8, width, GLASS, sem.MAT_GLASS)
        add(length / 2 - 0.02, 0.0, 0.8, height * 0.85, 0.04, width * 0.8, GLASS, sem.MAT_GLASS)
        lights(0.5, 0.7, inset=0.35)
    elif det == "trailer":
        body = np.array([[200, 200, 200], [150, 150, 155], [90, 100, 120], [180, 150, 110]])[rng.integers(4)]
        wheels(0.5, (-length / 2 + 1.2, -length / 2 + 2.4))
        add(0.0, 0.0, 0.7, 1.25, length, width * 0.5, (40, 40, 40), sem.MAT_RUBBER)
        add(0.0, 0.0, 1.25, height, length, width, body, sem.MAT_PAINTED_METAL)
        add(-length / 2 + 0.03, 0.0, 1.3, 1.5, 0.06, width * 0.9, (220, 40, 30), sem.MAT_RETRO)
    elif det == "construction_vehicle":
        yellow = np.array([235, 180, 20]) + rng.integers(-20, 21, 3)
        wheels(0.7, (length / 2 - 1.2, -length / 2 + 1.2), wheel_width=0.5)
        add(0.0, 0.0, 0.6, height * 0.5, length * 0.95, width * 0.95, yellow, sem.MAT_PAINTED_METAL)
        add(-length * 0.15, 0.0, height * 0.5, height, length * 0.35, width * 0.7, GLASS, sem.MAT_GLASS)
        add(length * 0.32, 0.0, height * 0.5, height * 0.62, length * 0.36, 0.35, yellow * 0.8,
            sem.MAT_PAINTED_METAL)
        add(length * 0.45, 0.0, 0.0, 0.8, length * 0.1, width, (70, 70, 70), sem.MAT_PAINTED_METAL)
    elif det == "pedestrian":
        shirt = SHIRT_COLORS[rng.integers(len(SHIRT_COLORS))]
        if agent.category.endswith("construction_worker"):
            shirt = np.array([250, 120, 20])
        elif agent.category.endswith("police_officer"):
            shirt = np.array([30, 40, 90])
        skin = SKIN[rng.integers(len(SKIN))]
        trousers = np.array([[30, 35, 60], [40, 40, 40], [110, 100, 80], [70, 70, 75]])[rng.integers(4)]
        material = sem.MAT_RETRO if agent.category.endswith("construction_worker") else sem.MAT_CLOTH
        if agent.state == "sitting":
            add(length * 0.1, 0.0, 0.0, 0.5, length * 0.8, width * 0.7, trousers, sem.MAT_CLOTH)
            add(-length * 0.2, 0.0, 0.5, height - 0.25, length * 0.4, width * 0.9, shirt, material)
            add(-length * 0.2, 0.0, height - 0.25, height, 0.22, 0.2, skin, sem.MAT_CLOTH)
        else:
            leg = height * 0.47
            add(0.0, 0.0, 0.0, leg, length * 0.45, width * 0.6, trousers, sem.MAT_CLOTH)
            add(0.0, 0.0, leg, height * 0.86, length * 0.5, width * 0.95, shirt, material)
            add(0.0, 0.0, height * 0.86, height, 0.22, 0.2, skin, sem.MAT_CLOTH)
    elif det in ("bicycle", "motorcycle"):
        frame = np.array([[30, 30, 30], [170, 30, 30], [30, 60, 150], [200, 200, 200]])[rng.integers(4)]
        radius = 0.34 if det == "bicycle" else 0.32
        for x in (length / 2 - radius, -length / 2 + radius):
            add(x, 0.0, 0.0, 2 * radius, 2 * radius, 0.07 if det == "bicycle" else 0.14, TIRE, sem.MAT_RUBBER)
        top = 0.95 if det == "bicycle" else 1.05
        if det == "bicycle":
            add(0.0, 0.0, 0.35, 0.75, length * 0.5, 0.06, frame, sem.MAT_PAINTED_METAL)
            add(length * 0.32, 0.0, 0.75, top, 0.08, min(width, 0.55), frame, sem.MAT_PAINTED_METAL)
        else:
            add(0.0, 0.0, 0.3, 0.85, length * 0.6, width * 0.55, frame, sem.MAT_PAINTED_METAL)
            add(length * 0.3, 0.0, 0.85, top, 0.12, min(width, 0.75), (40, 40, 40), sem.MAT_PAINTED_METAL)
            add(length / 2 - 0.05, 0.0, 0.6, 0.75, 0.08, 0.18, (240, 240, 220), sem.MAT_RETRO)
        if agent.ridden:
            shirt = SHIRT_COLORS[rng.integers(len(SHIRT_COLORS))]
            head_top = height
            add(-length * 0.08, 0.0, 0.75, head_top - 0.3, 0.4, min(width, 0.5), shirt, sem.MAT_CLOTH)
            add(-length * 0.05, 0.0, head_top - 0.3, head_top, 0.25, 0.22,
                (20, 20, 20) if det == "motorcycle" else SKIN[rng.integers(len(SKIN))], sem.MAT_CLOTH)
    elif det == "traffic_cone":
        orange = (245, 110, 20)
        add(0.0, 0.0, 0.0, 0.05, length, width, (30, 30, 30), sem.MAT_RUBBER)
        add(0.0, 0.0, 0.05, height * 0.45, length * 0.7, width * 0.7, orange, sem.MAT_PAINTED_METAL)
        add(0.0, 0.0, height * 0.45, height * 0.65, length * 0.5, width * 0.5, (240, 240, 240), sem.MAT_RETRO)
        add(0.0, 0.0, height * 0.65, height, length * 0.32, width * 0.32, orange, sem.MAT_PAINTED_METAL)
    elif det == "barrier":
        n = 5
        seg = width / n
        for i in range(n):
            color = (215, 30, 30) if i % 2 == 0 else (240, 240, 240)
            add(0.0, -width / 2 + seg * (i + 0.5), height * 0.35, height, length * 0.6, seg, color,
                sem.MAT_RETRO if i % 2 else sem.MAT_PAINTED_METAL)
        for y in (-width / 2 + 0.15, width / 2 - 0.15):
            add(0.0, y, 0.0, height * 0.35, length, 0.2, (60, 60, 60), sem.MAT_PAINTED_METAL)
    else:  # pragma: no cover - every detection class is handled above
        raise ValueError(det)
    return parts
