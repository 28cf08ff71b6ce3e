"""bench/runner.py's `--json PATH`: every speed benchmark writes {"machine", "rows": [{setting, implementation,
role, items_per_s, temp_mib}]} from the same (setting, Timing) rows as its Markdown table. Timings are never
asserted, only the schema and that the JSON and the printed table agree."""

import json
import math

import pytest

from bench import grad_norms, iwae_samples, regret, runner

KEYS = {"setting", "implementation", "role", "items_per_s", "temp_mib"}


@pytest.fixture(autouse=True)
def fresh_rows(monkeypatch):
    runner.RECORDED.clear()
    # --no-write already leaves BENCHMARKS.md alone; this makes sure of it.
    monkeypatch.setattr(runner, "write_section", lambda *a, **k: pytest.fail("BENCHMARKS.md written"))
    monkeypatch.setattr(grad_norms, "write_section", lambda *a, **k: pytest.fail("BENCHMARKS.md written"))
    yield
    runner.RECORDED.clear()


def printed_rows(out: str) -> list[list[str]]:
    """The timing rows a bench printed: the cells of each `| setting | implementation | ms | images/s | ...` line,
    each (setting, implementation) once, in order (rows without a time, like grad_norms' coverage note, skipped)."""
    rows, seen = [], set()
    for line in out.splitlines():
        if not line.startswith("| "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not cells[3] or (cells[0], cells[1]) in seen:
            continue
        seen.add((cells[0], cells[1]))
        rows.append(cells)
    return rows


def run_bench(module, argv, tmp_path, monkeypatch, capsys) -> tuple[dict, list[list[str]]]:
    path = tmp_path / "out" / "bench.json"
    monkeypatch.setattr("sys.argv", [module.__name__, *argv, "--no-write", "--json", str(path)])
    module.main()
    assert runner.RECORDED == []       # a finished run starts the next one fresh
    return json.loads(path.read_text()), printed_rows(capsys.readouterr().out)


def check_schema(data: dict, table: list[list[str]], *, settings: int) -> None:
    assert set(data) == {"machine", "rows"} and data["machine"] == runner.machine_description()
    rows = data["rows"]
    assert rows and all(set(r) == KEYS for r in rows)
    assert {r["role"] for r in rows} <= set(runner.ROLES)
    by_setting: dict[str, list[dict]] = {}
    for r in rows:
        by_setting.setdefault(r["setting"], []).append(r)
    assert len(by_setting) == settings
    for setting, group in by_setting.items():
        assert [r["role"] for r in group].count("baseline") == 1, setting
        assert [r["role"] for r in group].count("oodgen") == 1, setting
    for r in rows:
        assert isinstance(r["items_per_s"], float) and r["items_per_s"] > 0 and math.isfinite(r["items_per_s"])
        assert r["temp_mib"] is None or r["temp_mib"] >= 0
    # The same rows as the Markdown table the bench printed, in the same order, with the same images/s.
    assert [(c[0], c[1]) for c in table] == [(r["setting"], r["implementation"]) for r in rows]
    assert [c[3] for c in table] == [f"{r['items_per_s']:,.0f}" for r in rows]


def test_iwae_samples_json(tmp_path, monkeypatch, capsys):
    data, table = run_bench(iwae_samples, ["--batch", "2", "--samples", "1,2", "--repeats", "1"],
                            tmp_path, monkeypatch, capsys)
    check_schema(data, table, settings=2)
    assert {(r["implementation"], r["role"]) for r in data["rows"]} == {
        ("loop over S (reference)", "baseline"), ("S as a vmapped axis", "oodgen")}
    assert all(r["temp_mib"] is None for r in data["rows"])       # this bench does not measure memory
    assert [r["setting"] for r in data["rows"]] == ["B=2, S=1"] * 2 + ["B=2, S=2"] * 2


def test_regret_json(tmp_path, monkeypatch, capsys):
    data, table = run_bench(regret, ["--batch", "2", "--steps", "1", "--samples", "1", "--repeats", "1"],
                            tmp_path, monkeypatch, capsys)
    check_schema(data, table, settings=1)
    assert [r["role"] for r in data["rows"]] == ["baseline", "oodgen"]


def test_grad_norms_json_has_a_floor_and_memory(tmp_path, monkeypatch, capsys):
    data, table = run_bench(grad_norms, ["--batch", "2", "--models", "vae", "--repeats", "1", "--chunk-size", "1"],
                            tmp_path, monkeypatch, capsys)
    check_schema(data, table, settings=1)
    roles = {r["implementation"]: r["role"] for r in data["rows"]}
    assert roles == {"per-example loop (reference)": "baseline", "vmap(grad), chunked": "other",
                     "fast path": "oodgen", "floor: one batched grad": "floor"}
    # temp memory: the same number as the table's last column
    assert [c[6] for c in table] == [f"{r['temp_mib']:.1f}" for r in data["rows"]]


def test_roles_are_checked_and_json_written_with_no_write(tmp_path):
    thunks = {"loop": lambda: 1.0, "ours": lambda: 2.0, "lower bound": lambda: 3.0}
    with pytest.raises(ValueError):
        runner.time_interleaved(thunks, baseline="loop", items_per_call=4, repeats=1, roles={"ours": "fast"})
    with pytest.raises(ValueError):
        runner.time_interleaved(thunks, baseline="loop", items_per_call=4, repeats=1, roles={"missing": "oodgen"})
    timings = runner.time_interleaved(thunks, baseline="loop", items_per_call=4, repeats=1,
                                      roles={"ours": "oodgen", "lower bound": "floor"},
                                      temp_mib={"ours": 1.5, "lower bound": float("nan")})
    assert [t.role for t in timings] == ["baseline", "oodgen", "floor"]
    rows = runner.markdown_rows(timings, "B=4")
    assert len(rows) == 3 and rows[1].startswith("| B=4 | ours | ") and rows[1].count("|") == 6
    path = tmp_path / "t.json"
    runner.publish("unused", "heading", "description", "command", rows, no_write=True, json_path=path)
    data = json.loads(path.read_text())
    assert [(r["role"], r["temp_mib"]) for r in data["rows"]] == [("baseline", None), ("oodgen", 1.5), ("floor", None)]
    assert runner.RECORDED == []
