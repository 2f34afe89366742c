"""Set pieces placed near the ego: the guaranteed all-classes set at the start of every scene and rows of
barriers along the curb."""
from __future__ import annotations

import numpy as np

from bevfusion_ros.data.synth.agents import make_agent
from bevfusion_ros.data.synth.placement import Placer
from bevfusion_ros.data.synth.world import City, Road


def in_intersection(city: City, road: Road, a: float, extra: float) -> bool:
    """Whether along-coordinate `a` of `road` is within `extra` metres of a cross road's curb."""
    return any(abs(a - c.pos) < c.half + extra for c in city.roads if c.axis != road.axis)


def guaranteed_set(city: City, ego, rng, placer: Placer, speeds: dict, reserved: dict) -> None:
    """All 10 classes close to the ego's start (within the classes' evaluation ranges)."""
    road = ego.road
    d = ego.direction
    heading_fwd = ego.yaw
    heading_far = heading_fwd + np.pi
    far_side = -d          # the strip across the road (traffic in the other direction)
    near_side = d
    # Construction zone on the far-side parking strip, 12-22 m ahead: cones along the lane edge, barriers
    # closing it off, a construction vehicle on the strip (its wide body partly on the curb), workers.
    zone_a = ego.start + d * float(rng.uniform(12.0, 22.0))
    zone_len = float(rng.uniform(14.0, 22.0))
    outward = float(np.sign(road.strip_offset(far_side, city.side)))
    cone_lat = outward * (road.lanes_half + 0.3)
    n_cones = int(rng.integers(4, 8))
    for i in range(n_cones):
        a = zone_a + d * zone_len * i / max(1, n_cones - 1)
        placer.add(make_agent("movable_object.trafficcone", rng, road.point(a, cone_lat), float(rng.uniform(-3, 3)),
                              required=True), check=False)
    cursor = zone_a - d * 1.5
    for _ in range(int(rng.integers(3, 7))):
        barrier = make_agent("movable_object.barrier", rng, (0, 0), heading_fwd + np.pi / 2, required=True)
        cursor -= d * barrier.size[1] / 2
        barrier.start = road.point(cursor, outward * (road.half - 0.7))
        placer.add(barrier, check=False)
        cursor -= d * (barrier.size[1] / 2 + 0.15)
    cv = make_agent("vehicle.construction", rng, (0, 0), heading_far, 0.0, "parked", required=True)
    cv_lat = outward * (road.lanes_half + 0.75 + cv.size[1] / 2)
    for frac in np.linspace(0.5, 0.9, 5):
        cv.start = road.point(zone_a + d * zone_len * frac, cv_lat)
        if placer.add(cv):
            break
    else:
        placer.add(cv, check=False)
    for i in range(int(rng.integers(1, 3))):
        for _ in range(8):
            a = zone_a + d * zone_len * rng.uniform(0.05, 0.45)
            worker = make_agent("human.pedestrian.construction_worker", rng,
                                road.point(a, outward * (road.lanes_half + float(rng.uniform(0.8, 2.0)))),
                                float(rng.uniform(-np.pi, np.pi)), 0.0, "standing", required=True)
            if placer.add(worker):
                break
    # Parked trailer and truck on the near-side strip, ahead and behind.
    lateral_near = road.strip_offset(near_side, city.side)
    for category, ahead in (("vehicle.trailer", (12.0, 38.0)), ("vehicle.truck", (-28.0, -8.0))):
        agent = make_agent(category, rng, (0, 0), heading_fwd, 0.0, "parked", required=True)
        push = max(0.0, agent.size[1] - road.strip_width + 0.1)
        for attempt in range(30):
            lateral = lateral_near if attempt < 20 else road.strip_offset(far_side, city.side)
            agent.heading = heading_fwd if attempt < 20 else heading_far
            a = ego.start + d * float(rng.uniform(*ahead))
            agent.start = road.point(a, lateral + np.sign(lateral) * push)
            if placer.add(agent):
                break
    # A bus in the opposite lane next to the centre line and a motorcycle rider in the outer opposite lane,
    # coming towards the ego at their lanes' speeds (their platoons keep clear of them).
    for category, lane in (("vehicle.bus.rigid", 0), ("vehicle.motorcycle", road.lanes - 1)):
        agent = make_agent(category, rng, (0, 0), heading_far, speeds[(-d, lane)], "moving",
                           ridden=category == "vehicle.motorcycle", required=True)
        taken = reserved.setdefault((-d, lane), [])
        half = agent.size[0] / 2 + 6.0
        for _ in range(40):
            a = ego.start + d * float(rng.uniform(22.0, 40.0) if category.startswith("vehicle.bus")
                                      else rng.uniform(-25.0, 35.0))
            if not any(lo - half < a < hi + half for lo, hi in taken):
                break
        agent.start = road.point(a, road.lane_offset(-d, lane, city.side))
        placer.add(agent, check=False)
        taken.append((a - half, a + half))
    # Bicycle and motorcycle parked on the near sidewalk; a cyclist riding slowly on the other sidewalk.
    sign = 1 if np.sign(lateral_near) > 0 else -1
    for category in ("vehicle.bicycle", "vehicle.motorcycle"):
        for attempt in range(30):
            side = sign if attempt < 15 else -sign
            a = ego.start + d * float(rng.uniform(-15.0, 25.0))
            heading = float(np.arctan2(*(road.normal * side)[::-1])) + float(rng.normal(0, 0.2))
            agent = make_agent(category, rng, road.point(a, road.sidewalk_offset(side, 0.35)), heading, 0.0,
                               "parked", required=True)
            if placer.add(agent):
                break
    cyclist = make_agent("vehicle.bicycle", rng,
                         road.point(ego.start + d * float(rng.uniform(-10.0, 10.0)),
                                    road.sidewalk_offset(-sign, 0.6)),
                         heading_fwd, float(rng.uniform(1.0, 2.5)), "moving", ridden=True, required=True)
    placer.add(cyclist, check=False)


def barrier_rows(city: City, road: Road, rng, placer: Placer, a_lo, a_hi) -> None:
    """Rows of barriers (road works, closed-off curbs) along the curb, some with cones in front."""
    for _ in range(int(rng.poisson((a_hi - a_lo) / 90.0))):
        direction = int(rng.choice([-1, 1]))
        heading = float(np.arctan2(*(road.normal * direction)[::-1]))
        lateral = -direction * city.side * (road.half - 0.45)
        a = float(rng.uniform(a_lo, a_hi))
        for _ in range(int(rng.integers(4, 10))):
            barrier = make_agent("movable_object.barrier", rng, (0, 0), heading)
            a += barrier.size[1] / 2
            if in_intersection(city, road, a, 3.0 + road.sidewalk):
                break
            barrier.start = road.point(a, lateral)
            placer.add(barrier)
            a += barrier.size[1] / 2 + float(rng.uniform(0.1, 0.4))
            if rng.random() < 0.15:
                cone_lat = lateral - np.sign(lateral) * 1.2
                placer.add(make_agent("movable_object.trafficcone", rng, road.point(a + 1.3, cone_lat),
                                      float(rng.uniform(-3, 3))))
