"""Report how long each lesson took under nbval (setup, every cell, teardown), and write it to
build/nbval_times.json, so CI shows every notebook's execution time next to its 120 s budget."""

import json
import time
from collections import defaultdict
from pathlib import Path

BUDGET_S = 120
_times: dict[str, float] = defaultdict(float)
_first: dict[str, float] = {}


def pytest_runtest_logreport(report):
    path = Path(report.location[0])
    if path.suffix == ".ipynb":
        _first.setdefault(path.stem, time.time())
        _times[path.stem] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _times:
        return
    terminalreporter.section("lesson execution times (nbval, this machine)")
    for name, seconds in sorted(_times.items()):
        flag = "" if seconds <= BUDGET_S else f"  over the {BUDGET_S} s budget"
        terminalreporter.write_line(f"{name:32s} {seconds:7.1f} s{flag}")
    out = Path(__file__).resolve().parent.parent / "build" / "nbval_times.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({k: round(v, 1) for k, v in sorted(_times.items())}, indent=1) + "\n")
