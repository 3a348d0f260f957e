"""Benchmark: time from "start harness" to every component healthy (/readyz ok).

Usage: python benchmarks/cluster_start.py [--runs N]
Prints per-component and total start times (median and max over the runs) and the
time to stop. Needs the control-plane binaries (`vk-fargate dev build`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from vk_fargate import settings
from vk_fargate.devcluster import binaries, cluster


async def one_run() -> tuple[dict[str, float], float, float]:
    bins = binaries.locate(settings.load())
    marks: dict[str, float] = {}
    began = time.monotonic()

    def progress(line: str) -> None:
        if line.endswith("s") and " healthy in " in line:
            marks[line.split()[0]] = time.monotonic() - began

    local = cluster.Cluster(bins)
    await local.start(progress)
    total = time.monotonic() - began
    stopping = time.monotonic()
    local.stop()
    return marks, total, time.monotonic() - stopping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    results = [asyncio.run(one_run()) for _ in range(runs)]
    for name in results[0][0]:
        values = [marks[name] for marks, _, _ in results]
        print(
            f"{name:<26} healthy at  median {statistics.median(values):5.2f}s  "
            f"max {max(values):5.2f}s"
        )
    totals = [total for _, total, _ in results]
    stops = [stop for _, _, stop in results]
    print(
        f"{'start -> all healthy':<26}             median {statistics.median(totals):5.2f}s  "
        f"max {max(totals):5.2f}s  ({runs} runs)"
    )
    print(
        f"{'stop':<26}             median {statistics.median(stops):5.2f}s  max {max(stops):5.2f}s"
    )


if __name__ == "__main__":
    main()
