"""Semantic classes and surface materials shared by the LiDAR ray caster, the camera renderer and the writer.

Class indices are the real nuScenes-lidarseg category indices (``category.json`` of nuScenes v1.0 with
lidarseg): the per-point ``lidarseg`` labels and the per-pixel camera ``semantic`` masks both use them.
Pixels that show no surface (sky) get 0 (``noise``: ignore).
"""
from __future__ import annotations

import numpy as np

# (index, name, description) exactly as in nuScenes-lidarseg's category.json.
LIDARSEG_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (0, "noise", "Any lidar return that does not correspond to a physical object, such as dust, vapor, noise, "
                 "fog, raindrops, smoke and reflections."),
    (1, "animal", "All animals, e.g. cats, rats, dogs, deer, birds."),
    (2, "human.pedestrian.adult", "Adult subcategory."),
    (3, "human.pedestrian.child", "Child subcategory."),
    (4, "human.pedestrian.construction_worker", "Construction worker"),
    (5, "human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle, e.g. skateboard, "
                                              "segway, or scooters, on which the person typically travels."),
    (6, "human.pedestrian.police_officer", "Police officer."),
    (7, "human.pedestrian.stroller", "Strollers. If a person is in the stroller, include in the annotation."),
    (8, "human.pedestrian.wheelchair", "Wheelchairs. If a person is in the wheelchair, include in the "
                                       "annotation."),
    (9, "movable_object.barrier", "Temporary road barrier placed in the scene in order to redirect traffic."),
    (10, "movable_object.debris", "Movable object that is left on the driveable surface."),
    (11, "movable_object.pushable_pullable", "Objects that a pedestrian may push or pull."),
    (12, "movable_object.trafficcone", "All types of traffic cone."),
    (13, "static_object.bicycle_rack", "Area or device intended to park or secure the bicycles in a row."),
    (14, "vehicle.bicycle", "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds "
                            "either on road surface, sidewalks or bicycle paths."),
    (15, "vehicle.bus.bendy", "Bendy bus subcategory. Annotate each section of the bendy bus individually."),
    (16, "vehicle.bus.rigid", "Rigid bus subcategory."),
    (17, "vehicle.car", "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, wagons, vans, "
                        "mini-vans, SUVs and jeeps."),
    (18, "vehicle.construction", "Vehicles primarily designed for construction. Typically very slow moving or "
                                 "stationary."),
    (19, "vehicle.emergency.ambulance", "All types of ambulances."),
    (20, "vehicle.emergency.police", "All types of police vehicles."),
    (21, "vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly."),
    (22, "vehicle.trailer", "Any vehicle trailer, both for trucks, cars and bikes."),
    (23, "vehicle.truck", "Vehicles primarily designed to haul cargo including pick-ups, lorrys, trucks and "
                          "semi-tractors."),
    (24, "flat.driveable_surface", "All paved or unpaved surfaces that a car can drive on with no concern of "
                                   "traffic rules."),
    (25, "flat.other", "All other forms of horizontal ground-level structures that do not belong to any of "
                       "driveable_surface, curb, sidewalk and terrain."),
    (26, "flat.sidewalk", "Sidewalk, pedestrian walkways, bike paths, etc."),
    (27, "flat.terrain", "Natural horizontal surfaces such as ground level horizontal vegetation (< 20 cm tall), "
                         "grass, rolling hills, soil, sand and gravel."),
    (28, "static.manmade", "Includes man-made structures but not limited to: buildings, walls, guard rails, "
                           "fences, poles, drainages, hydrants, flags, banners, street signs, electric circuit "
                           "boxes, traffic lights, parking meters and stairs."),
    (29, "static.other", "Points in the background that are not distinguishable, or objects that do not match "
                         "any of the above labels."),
    (30, "static.vegetation", "Any vegetation in the frame that is higher than the ground, including bushes, "
                              "plants, potted plants, trees, etc. Only tall grass (> 20cm) is part of this, "
                              "ground level grass is part of `terrain`."),
    (31, "vehicle.ego", "The vehicle on which the cameras, radar and lidar are mounted, that is sometimes "
                        "visible at the bottom of the image."),
)
NAME_TO_INDEX: dict[str, int] = {name: idx for idx, name, _ in LIDARSEG_CATEGORIES}
INDEX_TO_NAME: dict[int, str] = {idx: name for idx, name, _ in LIDARSEG_CATEGORIES}

NOISE = 0
DRIVEABLE = NAME_TO_INDEX["flat.driveable_surface"]   # 24
FLAT_OTHER = NAME_TO_INDEX["flat.other"]              # 25
SIDEWALK = NAME_TO_INDEX["flat.sidewalk"]             # 26
TERRAIN = NAME_TO_INDEX["flat.terrain"]               # 27
MANMADE = NAME_TO_INDEX["static.manmade"]             # 28
VEGETATION = NAME_TO_INDEX["static.vegetation"]       # 30
SKY = NOISE

# Surface materials -> LiDAR intensity (nuScenes scale 0..255): mean, standard deviation.
MAT_ASPHALT, MAT_PAINT, MAT_CONCRETE, MAT_GRASS, MAT_FLAT_OTHER, MAT_BUILDING, MAT_POLE, MAT_VEGETATION, \
    MAT_PAINTED_METAL, MAT_GLASS, MAT_RUBBER, MAT_RETRO, MAT_CLOTH, MAT_ZEBRA = range(14)
MATERIAL_INTENSITY = np.array([
    (7.0, 3.0),      # asphalt
    (60.0, 15.0),    # lane paint
    (20.0, 5.0),     # concrete sidewalk
    (11.0, 4.0),     # grass
    (16.0, 5.0),     # other flat ground
    (28.0, 12.0),    # building walls
    (45.0, 20.0),    # metal poles
    (14.0, 7.0),     # vegetation
    (12.0, 8.0),     # painted vehicle body
    (4.0, 2.0),      # glass
    (3.0, 1.5),      # rubber, dark plastic
    (140.0, 40.0),   # retro-reflective (cone/barrier stripes, plates)
    (13.0, 5.0),     # clothing, skin
    (85.0, 20.0),    # crossing paint
], np.float32)
