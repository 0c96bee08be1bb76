"""diffusion_lessons.book: the lesson list agrees with notebooks/, and the times table reads lesson_times.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from diffusion_lessons import book

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, record) -> Path:
    path = tmp_path / "lesson_times.json"
    path.write_text(json.dumps(record))
    return path


def rows(table: str) -> dict[str, list[str]]:
    """Lesson stem -> its cells, from the markdown table (linked names)."""
    out = {}
    for line in table.splitlines():
        m = re.match(r"\| \[[^\]]+\]\(([^)]+)\.ipynb\) \| (.*) \|$", line)
        if m:
            out[m.group(1)] = [c.strip() for c in m.group(2).split(" | ")]
    return out


def test_table_shows_measured_times_and_not_measured_for_the_rest(tmp_path):
    path = write(tmp_path, {"cpu": {"00_welcome": 41.4, "03_noise_predictor": 150.0, "04_sampling": None},
                            "gpu": {"03_noise_predictor": 38.6},
                            "cpu_machine": "AMD EPYC, 2 cores", "gpu_machine": "NVIDIA H200"})
    table = book.lesson_table(path)
    cells = rows(table)
    assert list(cells) == [lesson.stem for lesson in book.LESSONS]
    assert cells["00_welcome"][1:] == ["41 s", book.NOT_MEASURED]
    assert cells["03_noise_predictor"][1:] == ["2.5 min", "39 s"]
    assert cells["04_sampling"][1:] == [book.NOT_MEASURED, book.NOT_MEASURED]  # null
    assert cells["07_text_to_image"][1:] == [book.NOT_MEASURED, book.NOT_MEASURED]  # absent
    assert "Measured on CPU: AMD EPYC, 2 cores; GPU: NVIDIA H200." in table


def test_missing_file_reads_not_measured_everywhere(tmp_path):
    table = book.lesson_table(tmp_path / "absent.json")
    cells = rows(table)
    assert len(cells) == len(book.LESSONS)
    assert all(c[1:] == [book.NOT_MEASURED] * 2 for c in cells.values())
    assert "No machine recorded yet." in table


def test_link_suffix_and_no_links(tmp_path):
    path = write(tmp_path, {"cpu": {}, "gpu": {}})
    assert "[01 Gaussian noise](01_gaussian_noise.html)" in book.lesson_table(path, link_suffix=".html")
    plain = book.lesson_table(path, link_suffix=None)
    assert "| 01 Gaussian noise |" in plain and "](" not in plain


@pytest.mark.parametrize("record, words", [
    ([1, 2], "JSON object"),
    ({"cpu": [3.0]}, "'cpu' must map"),
    ({"cpu": {"01_gaussian_noise": -1}}, "01_gaussian_noise"),
    ({"gpu": {"02_forward_noising": "12 s"}}, "02_forward_noising"),
    ({"cpu": {"00_welcome": True}}, "00_welcome"),
    ({"cpu": {"00_welcome": float("nan")}}, "00_welcome"),
])
def test_malformed_times_raise_value_error_naming_the_entry(tmp_path, record, words):
    path = tmp_path / "lesson_times.json"
    path.write_text(json.dumps(record))  # json writes NaN as a bare NaN, which json.loads reads back
    with pytest.raises(ValueError, match=re.escape(words)):
        book.load_lesson_times(path)


def test_format_seconds():
    assert book.format_seconds(None) == book.NOT_MEASURED
    assert book.format_seconds(0.4) == "0 s"
    assert book.format_seconds(59.6) == "60 s"
    assert book.format_seconds(119.0) == "119 s"
    assert book.format_seconds(600.0) == "10.0 min"


def heading(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "markdown")
    return first.source.splitlines()[0]


def test_lessons_match_the_notebooks_and_their_headings():
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.stem for p in notebooks] == [lesson.stem for lesson in book.LESSONS]
    for path, lesson in zip(notebooks, book.LESSONS):
        assert heading(path) == f"# Lesson {lesson.stem[:2]}: {lesson.title}", path.name


def test_committed_times_file_is_valid_and_names_only_lessons():
    times = book.load_lesson_times()
    assert book.TIMES_PATH.exists()
    stems = {lesson.stem for lesson in book.LESSONS}
    for device in book.DEVICES:
        assert set(times[device]) <= stems, f"unknown lesson names under {device!r}"


def test_time_line_reads_the_record_and_says_when_a_time_is_missing(tmp_path):
    path = write(tmp_path, {"cpu": {"04_sampling": 52.2}, "gpu": {}, "cpu_machine": "x"})
    line = book.time_line("04_sampling", path)
    assert line.startswith("**Time:** 52 s on a 2-core CPU") and f"GPU time {book.NOT_MEASURED}" in line
    with pytest.raises(ValueError, match="stem must be one of"):
        book.time_line("99_nothing", path)


def test_every_lesson_header_shows_its_time_from_the_record_not_typed():
    for lesson in book.LESSONS:
        nb = nbformat.read(ROOT / "notebooks" / f"{lesson.stem}.ipynb", as_version=4)
        head = nb.cells[0].source
        typed = re.findall(r"\d+(?:\.\d+)?\s*(?:s|min|seconds|minutes)\b", head)
        assert not typed, f"{lesson.stem}: the header types a time ({typed}); book.show_time reads the record"
        code = next(c for c in nb.cells if c.cell_type == "code")
        assert f'book.show_time("{lesson.stem}")' in code.source, f"{lesson.stem}: first code cell must show its time"
