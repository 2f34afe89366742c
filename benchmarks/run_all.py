"""`make bench`: run every benchmarks/bench_*.py and write JSON + markdown to benchmarks/results/.

Each benchmark module exposes ``run() -> dict`` (the machine-readable result, including a ``machine``
key) and ``markdown(result: dict) -> str`` (a table for humans). Benchmarks report ratios against a
baseline measured in the same run; nothing here asserts a time.

    python -m benchmarks.run_all [NAME ...]      # all, or only bench_NAME
"""
from __future__ import annotations

import importlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine_description() -> str:
    """A one-line description of where numbers were taken (benchmarks embed it in their JSON)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()} {platform.release()}")


def run_one(name: str) -> int:
    """Run ``bench_NAME`` in this process and write its JSON and markdown."""
    module = importlib.import_module(f"benchmarks.bench_{name}")
    started = time.perf_counter()
    result = module.run()
    result.setdefault("machine", machine_description())
    result["bench_wall_s"] = round(time.perf_counter() - started, 2)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    text = module.markdown(result)
    (RESULTS / f"{name}.md").write_text(text + "\n")
    print(text, flush=True)
    return 0


def write_summary() -> None:
    """SUMMARY.md from every result present, so running one benchmark keeps the others' tables."""
    parts = [f"## {path.stem}\n\n{path.read_text()}" for path in sorted(RESULTS.glob("*.md"))
             if path.name != "SUMMARY.md"]
    (RESULTS / "SUMMARY.md").write_text("# Benchmark results\n\n" + "\n".join(parts))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    RESULTS.mkdir(parents=True, exist_ok=True)
    if argv[:1] == ["--single"]:
        return run_one(argv[1])
    names = argv or sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    failed = []
    for name in names:
        # Each benchmark in a fresh process: one benchmark's thread pools, allocator state and imports
        # (spconv, the sparse_conv worker pool, OpenMP settings) must not carry over into the next one.
        print(f"== bench {name}", flush=True)
        code = subprocess.call([sys.executable, "-m", "benchmarks.run_all", "--single", name], cwd=HERE.parent)
        if code != 0:
            failed.append(name)
    write_summary()
    print(f"results written to {RESULTS}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
