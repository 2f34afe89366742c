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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = argv or sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = []
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"== bench {name}", flush=True)
        started = time.perf_counter()
        result = module.run()
        result.setdefault("machine", machine_description())
        result["bench_wall_s"] = round(time.perf_counter() - started, 2)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        text = module.markdown(result)
        (RESULTS / f"{name}.md").write_text(text + "\n")
        print(text, flush=True)
        summary.append(f"## {name}\n\n{text}\n")
    (RESULTS / "SUMMARY.md").write_text("# Benchmark results\n\n" + "\n".join(summary))
    print(f"results written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
