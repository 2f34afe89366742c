"""Same seed -> byte-identical dataset, also when scenes are generated in parallel; another seed differs."""
from __future__ import annotations

import hashlib

from bevfusion_ros.data.synth.generate import SynthConfig, generate

SMALL = dict(keyframes=2, camera_hz=2, progress=False)


def _digest(root) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".bin", ".jpg", ".png"):
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_same_seed_gives_identical_dataset_serial_or_parallel_other_seed_differs(tmp_path):
    generate(SynthConfig(out=tmp_path / "serial", splits=[("mini_train", 2)], seed=3, **SMALL))
    generate(SynthConfig(out=tmp_path / "parallel", splits=[("mini_train", 2)], seed=3, workers=2, **SMALL))
    generate(SynthConfig(out=tmp_path / "other", splits=[("mini_train", 1)], seed=4, **SMALL))
    serial, parallel, other = (_digest(tmp_path / name) for name in ("serial", "parallel", "other"))
    assert sum(name.endswith(".pcd.bin") for name in serial) == 2 * 11
    assert serial == parallel
    assert serial["v1.0-mini/sample_annotation.json"] != other["v1.0-mini/sample_annotation.json"]
    points_serial = {h for name, h in serial.items() if name.endswith(".pcd.bin")}
    points_other = {h for name, h in other.items() if name.endswith(".pcd.bin")}
    assert not points_serial & points_other
