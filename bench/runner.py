"""Times competing implementations interleaved in one process and writes Markdown rows.

Each repeat runs every candidate once, in a rotating order, so drift in machine load hits all of
them alike. Reported: median seconds per call, the 25–75% spread, throughput, and the speed-up of
each candidate over the baseline (baseline median / candidate median).

Every Markdown row comes from one (setting, Timing) pair recorded in `RECORDED` during the run; with
`--json PATH`, `publish` (or `write_json`) writes the same rows as
`{"machine": ..., "rows": [{"setting", "implementation", "role", "items_per_s", "temp_mib"}]}`.
Roles: "oodgen" (the library's own path), "baseline" (the reference way, the one speed-ups are
against), "floor" (a lower bound), "other" (anything else).
"""

import argparse
import dataclasses
import json
import math
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
    role: str = "other"  # one of ROLES
    temp_mib: float | None = None  # XLA temporary buffers of the compiled call; None where not measured

    @property
    def items_per_s(self) -> float:
        return self.items_per_call / self.median_s


ROLES = ("oodgen", "baseline", "floor", "other")

# The (setting, Timing) rows of this run, in order: what the Markdown table and the JSON are rendered from.
RECORDED: list[tuple[str, Timing]] = []


def time_interleaved(candidates: dict[str, Callable[[], Any]], *, baseline: str, items_per_call: int,
                     warmup: int = 1, repeats: int = 7, roles: dict[str, str] | None = None,
                     temp_mib: dict[str, float] | None = None) -> list[Timing]:
    """Runs each zero-argument candidate `warmup` times, then `repeats` interleaved timed calls.

    `roles` names the role of candidates other than `baseline` (which is "baseline"); unnamed ones are
    "other". `temp_mib`: measured temporary memory per candidate, where the bench measures it."""
    names = list(candidates)
    roles = {**(roles or {}), baseline: "baseline"}
    if baseline not in candidates or set(roles) - set(names) or set(roles.values()) - set(ROLES):
        raise ValueError(f"baseline {baseline!r} and roles {roles} must name candidates {names}; roles in {ROLES}")
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
        timings.append(Timing(name, median, q[0], q[2], items_per_call, base / median, roles.get(name, "other"),
                              None if temp_mib is None else temp_mib.get(name)))
    return timings


def record(timings: list[Timing], label: str) -> list[tuple[str, Timing]]:
    """Adds the timings of one setting to this run's rows; returns the (setting, Timing) pairs added."""
    pairs = [(label, t) for t in timings]
    RECORDED.extend(pairs)
    return pairs


def markdown_rows(timings: list[Timing], label: str) -> list[str]:
    """Records the timings of setting `label` (see RECORDED) and renders them as Markdown rows."""
    return [f"| {setting} | {t.name} | {t.median_s * 1e3:.1f} ({t.p25_s * 1e3:.1f}–{t.p75_s * 1e3:.1f}) | "
            f"{t.items_per_s:,.0f} | {t.speedup:.2f}× |" for setting, t in record(timings, label)]


def json_rows(recorded: list[tuple[str, Timing]] | None = None) -> list[dict[str, Any]]:
    """The JSON form of (setting, Timing) rows; a temp_mib that is not a finite number becomes null."""
    return [{"setting": setting, "implementation": t.name, "role": t.role, "items_per_s": t.items_per_s,
             "temp_mib": t.temp_mib if t.temp_mib is not None and math.isfinite(t.temp_mib) else None}
            for setting, t in (RECORDED if recorded is None else recorded)]


def write_json(path: str | Path | None, recorded: list[tuple[str, Timing]] | None = None) -> None:
    """Writes this run's rows (or `recorded`) as {"machine": ..., "rows": [...]} to `path` (nothing if None)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"machine": machine_description(), "rows": json_rows(recorded)}, indent=1) + "\n")
    tmp.replace(path)


def add_json_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the rows as JSON to PATH (written with --no-write too)")
    return parser


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
    return add_json_flag(parser)


def publish(section: str, heading: str, description: str, command: str, rows: list[str], no_write: bool,
            json_path: str | Path | None = None) -> None:
    """Writes a titled timing table (machine, what was timed, the command) into BENCHMARKS.md, and this
    run's rows as JSON to `json_path` when given (also with `no_write`); then starts a fresh RECORDED."""
    body = "\n".join([f"### {heading}", "", f"Machine: {machine_description()}. {description}",
                      f"Command: `{command}`", "", *TABLE_HEADER, *rows])
    write_json(json_path)
    RECORDED.clear()
    if not no_write:
        write_section(backend_section(section), body)
