"""One scene's content: the ego route and the agents around it.

The ego drives straight along one lane of a road at constant speed. Around its route the scene places
traffic (platoons in every lane of the ego road, queues stopped at the stop lines of cross roads, traffic
leaving the intersections), parked vehicles on parking lanes and in car parks, cyclists in bike lanes,
pedestrians walking, standing and sitting on sidewalks (walkers heading for the ego road stop at the
curb), and one guaranteed "set" close to the start so that every scene holds all 10 detection classes
within their evaluation ranges: a construction zone (cones, barriers, a construction vehicle, workers),
a bus, a truck, a parked trailer, parked and ridden bicycles and motorcycles.

Nothing moves through anything else: lanes are exclusive, each lane's traffic shares one speed, cross
traffic waits (the ego road has green), parked objects are checked for overlap with the static world.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bevfusion_ros.data.synth.agents import Agent, make_agent
from bevfusion_ros.data.synth.placement import Placer, choice, group_length, vehicle_group
from bevfusion_ros.data.synth.setpieces import barrier_rows, guaranteed_set, in_intersection
from bevfusion_ros.data.synth.world import CROSSING_GAP, City, Road

ANNOTATION_RADIUS = 60.0     # objects within this xy distance of the ego are annotated
MAX_PER_KEYFRAME = 80
MIN_PER_KEYFRAME = 20
VEHICLE_MIX = (("vehicle.car", 0.72), ("vehicle.truck", 0.18), ("vehicle.bus.rigid", 0.035),
               ("vehicle.motorcycle", 0.015), ("vehicle.construction", 0.015), ("truck+trailer", 0.035))
PEDESTRIAN_MIX = (("human.pedestrian.adult", 0.90), ("human.pedestrian.child", 0.04),
                  ("human.pedestrian.construction_worker", 0.04), ("human.pedestrian.police_officer", 0.02))


@dataclass
class Ego:
    road: Road
    direction: int        # +1 / -1 along road.direction
    lateral: float        # lane centre offset
    start: float          # along-road coordinate at t = 0
    speed: float
    side: int = 1         # +1 keep right, -1 keep left

    @property
    def yaw(self) -> float:
        vec = self.road.direction * self.direction
        return float(np.arctan2(vec[1], vec[0]))

    def along(self, t: float) -> float:
        return self.start + self.direction * self.speed * t

    def pose(self, t: float) -> tuple[np.ndarray, float]:
        """(xy, yaw) of the ego (rear-axle frame origin, as nuScenes' ego pose) at time t."""
        return self.road.point(self.along(t), self.lateral), self.yaw


@dataclass
class Scenario:
    city: City
    ego: Ego
    agents: list[Agent]
    duration: float


def build_scenario(city: City, rng: np.random.Generator, duration: float) -> Scenario:
    ego = _choose_ego(city, rng, duration)
    centre, _ = ego.pose(duration / 2)
    placer = Placer(city, centre, duration * ego.speed / 2 + 140.0)
    a_lo = min(ego.along(0.0), ego.along(duration)) - 90.0
    a_hi = max(ego.along(0.0), ego.along(duration)) + 90.0
    speeds = _lane_speeds(ego, rng)
    reserved: dict[tuple[int, int], list[tuple[float, float]]] = {}
    guaranteed_set(city, ego, rng, placer, speeds, reserved)
    _ego_road_traffic(city, ego, rng, placer, a_lo, a_hi, duration, speeds, reserved)
    _curb_strips(city, ego.road, rng, placer, a_lo, a_hi)
    crosses = [c for c in city.roads if c.axis != ego.road.axis and a_lo - 10 < c.pos < a_hi + 10]
    for cross in crosses:
        _cross_road(city, ego, cross, rng, placer)
    _sidewalk_people(ego.road, rng, placer, a_lo, a_hi)
    barrier_rows(city, ego.road, rng, placer, a_lo, a_hi)
    _carparks(city, rng, placer, ego, duration)
    agents = _thin_to_limits(placer.agents, ego, duration, rng)
    return Scenario(city=city, ego=ego, agents=agents, duration=duration)


def _choose_ego(city: City, rng, duration: float) -> Ego:
    margin = 170.0
    roads = [r for r in city.roads if r.strip == "parking"] or city.roads
    road = roads[rng.integers(len(roads))]
    lo, hi = (city.bounds[0], city.bounds[2]) if road.axis == 0 else (city.bounds[1], city.bounds[3])
    speed = float(rng.choice([rng.uniform(1.0, 4.0), rng.uniform(4.0, 11.0)], p=[0.15, 0.85]))
    direction = int(rng.choice([-1, 1]))
    span = speed * duration
    start = float(rng.uniform(lo + margin, hi - margin - span))
    if direction < 0:
        start += span
    lane = int(rng.integers(road.lanes))
    return Ego(road=road, direction=direction, lateral=road.lane_offset(direction, lane, city.side), start=start,
               speed=speed, side=city.side)


def _platoon(road: Road, direction: int, lateral: float, speed: float, rng, placer: Placer,
             a_lo: float, a_hi: float, gap=(8.0, 35.0), keep_clear: list[tuple[float, float]] = (),
             state: str = "moving", mix=VEHICLE_MIX) -> None:
    """Vehicles in one lane, all at `speed`, spaced by `gap` (bumper to bumper), between a_lo and a_hi."""
    heading = float(np.arctan2(*(road.direction * direction)[::-1]))
    a = a_lo + float(rng.uniform(0, gap[1]))
    while a < a_hi:
        group = vehicle_group(rng, choice(rng, mix), (0, 0), heading, speed, state)
        length = group_length(group)
        centre = a + length / 2
        if not any(lo - length / 2 < centre < hi + length / 2 for lo, hi in keep_clear):
            # Stack the group back to front along the direction of travel.
            cursor = centre - direction * length / 2
            for agent in group:
                mid = cursor + direction * agent.size[0] / 2
                agent.start = road.point(mid, lateral)
                cursor = mid + direction * (agent.size[0] / 2 + 0.4)
                placer.add(agent, check=False)
        a += length + float(rng.uniform(*gap))


def _lane_speeds(ego: Ego, rng) -> dict[tuple[int, int], float]:
    """One speed per lane of the ego road: (direction, lane) -> m/s; the ego's lane moves with the ego."""
    road = ego.road
    speeds = {}
    for direction in (-1, 1):
        for lane in range(road.lanes):
            if direction == ego.direction and abs(road.lane_offset(direction, lane, ego.side) - ego.lateral) < 0.1:
                speeds[(direction, lane)] = ego.speed
            elif direction == ego.direction:
                speeds[(direction, lane)] = float(np.clip(ego.speed + rng.uniform(-2.0, 3.0), 2.0, 14.0))
            else:
                speeds[(direction, lane)] = float(rng.uniform(5.0, 13.0))
    return speeds


def _ego_road_traffic(city: City, ego: Ego, rng, placer: Placer, a_lo, a_hi, duration,
                      speeds: dict, reserved: dict) -> None:
    """Platoons in every lane of the ego road, clear of the ego and of the `reserved` (along-road intervals
    at t = 0 per lane) guaranteed movers."""
    road = ego.road
    for (direction, lane), speed in speeds.items():
        lateral = road.lane_offset(direction, lane, city.side)
        clear = reserved.get((direction, lane), [])
        if speed == ego.speed and direction == ego.direction and abs(lateral - ego.lateral) < 0.1:
            _platoon(road, direction, lateral, speed, rng, placer, a_lo, a_hi, gap=(10.0, 40.0),
                     keep_clear=[(ego.start - 9.0, ego.start + 9.0), *clear],
                     mix=(("vehicle.car", 0.85), ("vehicle.truck", 0.1), ("vehicle.motorcycle", 0.05)))
        else:
            extra = speed * duration
            lo, hi = (a_lo - extra, a_hi) if direction > 0 else (a_lo, a_hi + extra)
            _platoon(road, direction, lateral, speed, rng, placer, lo, hi, gap=(15.0, 60.0), keep_clear=clear)


def _curb_strips(city: City, road: Road, rng, placer: Placer, a_lo, a_hi) -> None:
    """Parked vehicles on parking lanes; cyclists in bike lanes."""
    for direction in (-1, 1):
        heading = float(np.arctan2(*(road.direction * direction)[::-1]))
        if road.strip == "parking":
            lateral = road.strip_offset(direction, city.side)
            a = a_lo
            while a < a_hi:
                if rng.random() < 0.5:
                    a += float(rng.uniform(8, 30))
                    continue
                category = choice(rng, (("vehicle.car", 0.76), ("vehicle.truck", 0.18),
                                         ("vehicle.motorcycle", 0.02), ("vehicle.trailer", 0.03),
                                         ("vehicle.bicycle", 0.01)))
                group = vehicle_group(rng, category, (0, 0), heading, 0.0, "parked")
                length = group_length(group)
                centre = a + length / 2
                if not in_intersection(city, road, centre, length / 2 + 6.0 + road.sidewalk):
                    for agent in group:
                        # Wide vehicles lean onto the curb rather than into the lane.
                        push = max(0.0, agent.size[1] - road.strip_width + 0.2)
                        lat = lateral + np.sign(lateral) * push
                        agent.start = road.point(centre, lat)
                        placer.add(agent)
                a += length + float(rng.uniform(0.8, 4.0))
        elif road.strip == "bike":
            lateral = road.strip_offset(direction, city.side)
            speed = float(rng.uniform(3.0, 6.0))
            for _ in range(int(rng.integers(0, 3))):
                a = float(rng.uniform(a_lo, a_hi))
                agent = make_agent("vehicle.bicycle", rng, road.point(a, lateral), heading, speed, "moving",
                                   ridden=True)
                placer.add(agent, check=False)


def _sidewalk_people(road: Road, rng, placer: Placer, a_lo, a_hi) -> None:
    """Pedestrians along both sidewalks of `road`: walkers (both ways), standers, sitters."""
    for sign in (-1, 1):
        length = a_hi - a_lo
        for _ in range(int(rng.poisson(length / 30.0))):
            a = float(rng.uniform(a_lo, a_hi))
            category = choice(rng, PEDESTRIAN_MIX)
            roll = rng.random()
            if roll < 0.7:
                direction = int(rng.choice([-1, 1]))
                frac = float(rng.uniform(0.45, 0.65) if direction > 0 else rng.uniform(0.7, 0.9))
                heading = float(np.arctan2(*(road.direction * direction)[::-1]))
                agent = make_agent(category, rng, road.point(a, road.sidewalk_offset(sign, frac)), heading,
                                   float(rng.uniform(0.9, 1.7)), "moving")
                placer.add(agent, check=False)
            else:
                state = "sitting" if roll > 0.93 else "standing"
                frac = float(rng.uniform(0.5, 0.9))
                heading = float(rng.uniform(-np.pi, np.pi))
                agent = make_agent(category, rng, road.point(a, road.sidewalk_offset(sign, frac)), heading, 0.0,
                                   state)
                placer.add(agent)
        # Parked bicycles and motorcycles in the furniture zone next to the curb.
        for _ in range(int(rng.poisson(length / 400.0))):
            a = float(rng.uniform(a_lo, a_hi))
            category = "vehicle.bicycle" if rng.random() < 0.6 else "vehicle.motorcycle"
            heading = float(np.arctan2(*(road.normal * sign)[::-1])) + float(rng.normal(0, 0.2))
            agent = make_agent(category, rng, road.point(a, road.sidewalk_offset(sign, 0.35)), heading, 0.0, "parked")
            placer.add(agent)


def _cross_road(city: City, ego: Ego, cross: Road, rng, placer: Placer) -> None:
    """Traffic and people on a road crossing the ego road at along-coordinate cross.pos."""
    road = ego.road
    for arm in (-1, 1):
        # Queue on the incoming lanes (moving towards the ego road: direction -arm), behind the stop line.
        stop = road.pos + arm * (road.half + CROSSING_GAP + min(cross.sidewalk, 4.0) + 1.0)
        heading_in = float(np.arctan2(*(cross.direction * -arm)[::-1]))
        heading_out = float(np.arctan2(*(cross.direction * arm)[::-1]))
        for lane in range(cross.lanes):
            lateral = cross.lane_offset(-arm, lane, city.side)
            cursor = stop + arm * float(rng.uniform(1.0, 2.5))
            for _ in range(int(rng.integers(0, 4))):
                group = vehicle_group(rng, choice(rng, VEHICLE_MIX), (0, 0), heading_in, 0.0, "stopped")
                for agent in reversed(group):   # front vehicle (the truck of a truck+trailer) first
                    mid = cursor + arm * agent.size[0] / 2
                    agent.start = cross.point(mid, lateral)
                    placer.add(agent, check=False)
                    cursor = mid + arm * (agent.size[0] / 2 + 0.4)
                cursor += arm * float(rng.uniform(1.5, 3.5))
            # Traffic leaving the intersection, already clear of it.
            lateral_out = cross.lane_offset(arm, lane, city.side)
            speed = float(rng.uniform(5.0, 12.0))
            lo = road.pos + arm * (road.half + 12.0)
            hi = road.pos + arm * 80.0
            _platoon(cross, arm, lateral_out, speed, rng, placer, min(lo, hi), max(lo, hi), gap=(15.0, 50.0))
        # Parked cars on the cross road near the intersection.
        lo = road.pos + arm * (road.half + road.sidewalk + 10.0)
        hi = road.pos + arm * 75.0
        _curb_strips(city, cross, rng, placer, min(lo, hi), max(lo, hi))
        # Pedestrians on the cross road's sidewalks: some heading for the ego road stop at its curb.
        for sign in (-1, 1):
            for _ in range(int(rng.poisson(1.5))):
                a = road.pos + arm * float(rng.uniform(road.half + 2.0, 60.0))
                category = choice(rng, PEDESTRIAN_MIX)
                frac = float(rng.uniform(0.45, 0.9))
                point = cross.point(a, cross.sidewalk_offset(sign, frac))
                if rng.random() < 0.5:   # towards the ego road, waiting at the curb
                    travel = max(0.0, abs(a - road.pos) - road.half - 0.5)
                    agent = make_agent(category, rng, point, heading_in, float(rng.uniform(0.9, 1.6)), "moving",
                                       max_travel=travel)
                else:
                    agent = make_agent(category, rng, point, heading_out, float(rng.uniform(0.9, 1.6)), "moving")
                placer.add(agent, check=False)


def _carparks(city: City, rng, placer: Placer, ego: Ego, duration: float) -> None:
    centre, _ = ego.pose(duration / 2)
    reach = ego.speed * duration / 2 + 80.0
    for poly in city.carparks:
        x0, y0 = poly.min(0)
        x1, y1 = poly.max(0)
        nearest = np.clip(centre, [x0, y0], [x1, y1])
        if np.hypot(*(nearest - centre)) > reach:
            continue
        row_y = y0 + 3.0
        while row_y < y1 - 3.0:
            x = x0 + 1.5
            while x < x1 - 1.5:
                if rng.random() < 0.6:
                    category = "vehicle.car" if rng.random() < 0.92 else "vehicle.truck"
                    heading = np.pi / 2 if rng.random() < 0.5 else -np.pi / 2
                    agent = make_agent(category, rng, (x, row_y), heading, 0.0, "parked")
                    if agent.size[0] < 6.5:
                        placer.add(agent)
                x += 2.7
            row_y += 7.5 if (row_y - y0) % 15 < 7 else 5.5


def _thin_to_limits(agents: list[Agent], ego: Ego, duration: float, rng) -> list[Agent]:
    """Drop optional agents (never the guaranteed set) until no keyframe sees more than MAX_PER_KEYFRAME
    within the annotation radius, and drop agents that never come within it."""
    times = np.arange(0.0, duration + 1e-6, 0.5)
    ego_xy = np.array([ego.pose(t)[0] for t in times])
    pos = np.array([[a.box(t)[:2] for t in times] for a in agents])          # A, T, 2
    inside = np.linalg.norm(pos - ego_xy[None], axis=2) < ANNOTATION_RADIUS   # A, T
    keep = inside.any(axis=1)
    # Removing a lane vehicle would leave a gap, which is fine; remove the least important first.
    order = rng.permutation(len(agents))
    for idx in order:
        counts = inside[keep].sum(axis=0)
        if counts.max() <= MAX_PER_KEYFRAME:
            break
        if keep[idx] and not agents[idx].required and np.any(inside[idx] & (counts > MAX_PER_KEYFRAME)):
            keep[idx] = False
    return [a for a, k in zip(agents, keep) if k]


