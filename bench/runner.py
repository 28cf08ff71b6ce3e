"""Times competing implementations interleaved in one process and writes Markdown rows.

Each repeat runs every candidate once, in a rotating order, so drift in machine load hits all of
them alike. Reported: median seconds per call, the 25–75% spread, throughput, and the speed-up of
each candidate over the baseline (baseline median / candidate median).
"""

import argparse
import dataclasses
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

BENCHMARKS_FILE = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


@dataclasses.dataclass(frozen=True)
class Timing:
    name: str
    median_s: float
    p25_s: float
    p75_s: float
    items_per_call: int
    speedup: float  # baseline median / this median

    @property
    def items_per_s(self) -> float:
        return self.items_per_call / self.median_s


def time_interleaved(candidates: dict[str, Callable[[], Any]], *, baseline: str, items_per_call: int,
                     warmup: int = 1, repeats: int = 7) -> list[Timing]:
    """Runs each zero-argument candidate `warmup` times, then `repeats` interleaved timed calls."""
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            jax.block_until_ready(candidates[name]())
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            jax.block_until_ready(candidates[name]())
            samples[name].append(time.perf_counter() - start)
    base = statistics.median(samples[baseline])
    timings = []
    for name in names:
        q = statistics.quantiles(samples[name], n=4) if len(samples[name]) > 1 else [samples[name][0]] * 3
        median = statistics.median(samples[name])
        timings.append(Timing(name, median, q[0], q[2], items_per_call, base / median))
    return timings


def markdown_rows(timings: list[Timing], label: str) -> list[str]:
    return [f"| {label} | {t.name} | {t.median_s * 1e3:.1f} ({t.p25_s * 1e3:.1f}–{t.p75_s * 1e3:.1f}) | "
            f"{t.items_per_s:,.0f} | {t.speedup:.2f}× |" for t in timings]


TABLE_HEADER = ["| setting | implementation | ms per call, median (25–75%) | images/s | speed-up vs baseline |",
                "|---|---|---:|---:|---:|"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    devices = jax.devices()
    return (f"{len(devices)}× {devices[0].device_kind} ({jax.default_backend()}); host: {_cpu_model()}, "
            f"{os.cpu_count()} cores; JAX {jax.__version__}")


def backend_section(section: str) -> str:
    """A speed section's name on this backend: `section` on CPU, `section_gpu` (or _tpu) elsewhere, so
    rows from an accelerator sit beside the CPU rows instead of replacing them."""
    backend = jax.default_backend()
    return section if backend == "cpu" else f"{section}_{backend}"


def write_section(section: str, body: str, path: Path = BENCHMARKS_FILE) -> None:
    """Replaces the text between `<!-- bench:section -->` markers in BENCHMARKS.md (appends if absent)."""
    start, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def bench_parser(description: str, *, batch: int, samples: str) -> argparse.ArgumentParser:
    """The flags every speed benchmark takes: --batch, --samples (comma-separated), --repeats, --no-write."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--samples", default=samples)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print the rows, leave BENCHMARKS.md alone")
    return parser


def publish(section: str, heading: str, description: str, command: str, rows: list[str], no_write: bool) -> None:
    """Writes a titled timing table (machine, what was timed, the command) into BENCHMARKS.md."""
    body = "\n".join([f"### {heading}", "", f"Machine: {machine_description()}. {description}",
                      f"Command: `{command}`", "", *TABLE_HEADER, *rows])
    if not no_write:
        write_section(backend_section(section), body)
