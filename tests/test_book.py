"""The static book (tools/build_book.py, `make book`): order, navigation, embedded figures, widgets.

Rendered from stored outputs (no kernel), so these tests take seconds.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_book", ROOT / "tools" / "build_book.py")
build_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_book)

# a 1x1 PNG, as a notebook stores it (base64 text)
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005000201e221bc330000000049454e44ae426082")).decode()
VIEW = "application/vnd.jupyter.widget-view+json"


def hrefs(page: str) -> list[str]:
    return re.findall(r'href="([^"#:]+\.html)"', page)


def nav_links(page: str) -> dict[str, str]:
    """rel -> href of the first navigation bar on a lesson page."""
    nav = re.search(r'<nav class="dl-nav">(.*?)</nav>', page, re.S).group(1)
    return dict((rel, href) for href, rel in re.findall(r'href="([^"]+)" rel="(prev|next)"', nav))


def png_outputs(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def check_book(out: Path, paths: list[Path]) -> None:
    """Index lists every lesson in order; each page links its neighbours and embeds its figures."""
    names = [p.with_suffix(".html").name for p in paths]
    assert [h for h in hrefs((out / "index.html").read_text()) if h != "index.html"] == names
    for i, (path, name) in enumerate(zip(paths, names)):
        page = (out / name).read_text()
        expected = {}
        if i > 0:
            expected["prev"] = names[i - 1]
        if i < len(names) - 1:
            expected["next"] = names[i + 1]
        assert nav_links(page) == expected, name
        nb = nbformat.read(path, as_version=4)
        assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', page)) == png_outputs(nb), name
        assert VIEW not in page and "widget-state+json" not in page, name
        assert not re.search(r"\b(Explorer|VBox|HBox)\(children=", page), name


def fake_lesson(title_cell: str, outputs: list[dict], seconds: float | None = None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("show()", outputs=[nbformat.from_dict(o) for o in outputs])
    if seconds is not None:
        cell.metadata["execution"] = {"iopub.status.busy": "2025-01-01T00:00:00.000Z",
                                      "shell.execute_reply": f"2025-01-01T00:00:{seconds:06.3f}Z"}
    nb.cells = [nbformat.v4.new_markdown_cell(title_cell), cell]
    return nb


def tqdm_state() -> dict:
    """Saved widget state of a finished tqdm bar (HBox of HTML, FloatProgress, HTML)."""
    models = {"bar": ("HBoxModel", {"children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]}),
              "l": ("HTMLModel", {"value": "training: 100%"}),
              "p": ("FloatProgressModel", {"value": 50, "max": 50}),
              "r": ("HTMLModel", {"value": " 50/50 [00:05&lt;00:00, 9.8it/s]"})}
    return {"state": {k: {"model_name": name, "state": state} for k, (name, state) in models.items()}}


@pytest.fixture
def fake_notebooks(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    figure = {"output_type": "display_data", "metadata": {}, "data": {"image/png": PNG, "text/plain": "<Figure>"}}
    explorer = {"output_type": "display_data", "metadata": {},
                "data": {VIEW: {"model_id": "box", "version_major": 2, "version_minor": 0},
                         "text/plain": "Explorer(children=(HBox(children=(IntSlider(value=0),)),))"}}
    progress = {"output_type": "display_data", "metadata": {},
                "data": {VIEW: {"model_id": "bar", "version_major": 2, "version_minor": 0},
                         "text/plain": "  0%|          | 0/50"}}
    first = fake_lesson("# Static noise\nSome prose.", [figure, explorer], seconds=12.5)
    second = fake_lesson("Intro line\n\n## Forward noising", [figure, figure, progress])
    second.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": tqdm_state()}
    third = fake_lesson("No heading here", [])
    for name, nb in [("01_static.ipynb", first), ("02_forward.ipynb", second), ("10_last.ipynb", third),
                     ("scratch.ipynb", fake_lesson("# not a lesson", []))]:
        nbformat.write(nb, folder / name)
    return folder


def test_fake_book_order_navigation_figures_and_widgets(fake_notebooks: Path, tmp_path: Path) -> None:
    out = tmp_path / "book"
    out.mkdir()
    (out / "99_stale.html").write_text("old")
    lessons = build_book.build_book(fake_notebooks, out, execute_it=False)
    paths = [fake_notebooks / n for n in ("01_static.ipynb", "02_forward.ipynb", "10_last.ipynb")]
    check_book(out, paths)
    assert [x["title"] for x in lessons] == ["Static noise", "Forward noising", "10_last"]
    assert not (out / "99_stale.html").exists() and not (out / "scratch.html").exists()
    first, second = (out / "01_static.html").read_text(), (out / "02_forward.html").read_text()
    assert "<title>Static noise</title>" in first
    assert 'class="dl-widget-note"' in first and 'class="dl-widget-note"' not in second
    assert "training: 100%|██████████|  50/50 [00:05&lt;00:00, 9.8it/s]" in second
    timings = json.loads((out / "timings.json").read_text())
    assert timings["mode"] == "stored" and timings["machine"]["cores"] >= 1
    assert [(x["notebook"], x["seconds"]) for x in timings["lessons"]] == [
        ("01_static.ipynb", 12.5), ("02_forward.ipynb", None), ("10_last.ipynb", None)]
    assert "12 s (stored run)" in (out / "index.html").read_text()


def test_real_book_from_stored_notebooks(tmp_path: Path) -> None:
    paths = build_book.lesson_paths(ROOT / "notebooks")
    if not paths:
        pytest.skip("no lessons in notebooks/ yet")
    build_book.build_book(ROOT / "notebooks", tmp_path, execute_it=False)
    check_book(tmp_path, paths)
    without = [p.name for p in paths if not png_outputs(nbformat.read(p, as_version=4))]
    assert not without, f"every stored lesson shows at least one figure; none in {without}"


def test_bad_notebooks_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="notebooks must be a directory"):
        build_book.lesson_paths(tmp_path / "missing")


def test_math_is_typeset_offline_when_a_local_mathjax_exists(fake_notebooks: Path, tmp_path: Path) -> None:
    build_book.build_book(fake_notebooks, tmp_path, execute_it=False)
    page = (tmp_path / "01_static.html").read_text()
    script = re.search(r'<script src="([^"]*MathJax[^"]*|[^"]*mathjax[^"]*)"', page).group(1)
    local = next((d for d in build_book.MATHJAX_DIRS if (d / "MathJax.js").is_file()), None)
    if local is None:
        assert script.startswith("https://"), "without a local MathJax the pages use the CDN"
        pytest.skip("no local MathJax (apt-get install libjs-mathjax): pages load MathJax from its CDN")
    assert script == f"mathjax/MathJax.js?config={build_book.MATHJAX_CONFIG}"
    for part in build_book.MATHJAX_PARTS:
        assert (tmp_path / "mathjax" / part).exists(), part
    assert (tmp_path / "mathjax" / "fonts/HTML-CSS/TeX/woff/MathJax_Main-Regular.woff").stat().st_size > 1000
