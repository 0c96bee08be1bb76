"""Record lesson times and refresh every place that shows them: python tools/refresh_times.py TIMES.json [NOTE].

TIMES.json: {stem: seconds} as make test's nbval run writes it (build/nbval_times.json). The CPU times in
benchmarks/lesson_times.json are replaced for the lessons it names (NOTE, if given, becomes the CPU machine line);
then the stored "Time:" line of every lesson, lesson 00's table and the README's table are rewritten from that
one record (book.time_line, book.lesson_table), so no time is typed anywhere by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_lessons import book  # noqa: E402

README_START, README_END = "## The lessons\n\n", "\nTimes are wall-clock"


def record(times: dict, note: str | None) -> None:
    data = json.loads(book.TIMES_PATH.read_text())
    for lesson in book.LESSONS:
        data["gpu"].setdefault(lesson.stem, None)
        if lesson.stem in times:
            data["cpu"][lesson.stem] = round(float(times[lesson.stem]), 1)
    order = [lesson.stem for lesson in book.LESSONS]
    for device in book.DEVICES:
        data[device] = {k: data[device].get(k) for k in order}
    if note:
        data["cpu_machine"] = note
    book.TIMES_PATH.write_text(json.dumps(data, indent=2) + "\n")


def refresh_notebooks() -> int:
    changed = 0
    for lesson in book.LESSONS:
        path = ROOT / "notebooks" / f"{lesson.stem}.ipynb"
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                md = out.get("data", {}).get("text/markdown")
                if md is None:
                    continue
                if md.startswith("**Time:**"):
                    out["data"]["text/markdown"] = book.time_line(lesson.stem)
                    out["data"]["text/plain"] = "<IPython.core.display.Markdown object>"
                elif md.startswith("| lesson | idea |"):
                    out["data"]["text/markdown"] = book.lesson_table()
        if nbformat.writes(nb) != before:
            nbformat.write(nb, path)
            changed += 1
    return changed


def refresh_readme() -> None:
    path = ROOT / "README.md"
    text = path.read_text()
    start = text.index(README_START) + len(README_START)
    end = text.index(README_END, start)
    path.write_text(text[:start] + book.lesson_table(link_suffix=None) + text[end:])


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    times = json.loads(Path(argv[0]).read_text())
    record(times, argv[1] if len(argv) > 1 else None)
    print(f"{book.TIMES_PATH}: {len(times)} CPU times; notebooks rewritten: {refresh_notebooks()}")
    refresh_readme()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
