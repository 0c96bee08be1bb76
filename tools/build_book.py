"""Render the lessons as a static HTML book: python tools/build_book.py [--no-execute] [--out DIR].

Every notebooks/NN_*.ipynb is executed top to bottom in a fresh `diffusion-lessons` kernel
(nbclient), timed, and rendered with nbconvert's HTML exporter into one page per lesson with
previous/next links; figures are embedded as data URIs, so the pages work offline and need no
node toolchain. index.html lists the lessons in order with their execution times, which are
also written to timings.json. With --no-execute the stored notebooks are rendered as they are
and the times come from the stored cells' execution timestamps.

Live widgets cannot run in a static page: each explorer already displays a static figure before
its controls, so the controls' output becomes a short note, and a tqdm progress bar becomes its
final text (read from the saved widget state).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import html
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

# nbformat, nbclient and nbconvert are imported where they are used, so that benchmarks/run.py can use
# the machine description on a GPU machine without Jupyter.

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "book_templates"
LESSON_NAME = re.compile(r"^\d\d_.+\.ipynb$")
# Offline math: a local MathJax 2 (Debian: apt-get install libjs-mathjax; or DL_MATHJAX_DIR) is copied
# into the book (about 1.5 MB); without one, the pages load MathJax from its CDN when online.
MATHJAX_DIRS = [Path(d) for d in (os.environ.get("DL_MATHJAX_DIR"), "/usr/share/javascript/mathjax",
                                  "/usr/share/mathjax") if d]
MATHJAX_CONFIG = "TeX-AMS_CHTML-full,Safe"
MATHJAX_PARTS = ("MathJax.js", "config/TeX-AMS_CHTML-full.js", "config/Safe.js", "extensions", "jax/input/TeX",
                 "jax/output/CommonHTML", "jax/element", "fonts/HTML-CSS/TeX/woff")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_NOTE = ('<div class="dl-widget-note">Live controls appear here when you run this lesson '
               'in JupyterLab; the figure above shows their starting values.</div>')


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform reports."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict:
    """What the timings were measured on: CPU, cores, torch version, GPU (if torch sees one)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "gpu": gpu,
            "python": platform.python_version(), "os": platform.platform(terse=True)}


def machine_label(machine: dict) -> str:
    """A one-line description, e.g. 'AMD EPYC 7B13, 2 cores, torch 2.13.0, no GPU'."""
    gpu = f"GPU {machine['gpu']}" if machine.get("gpu") else "no GPU"
    return f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, {gpu}"


def copy_mathjax(out: Path) -> str | None:
    """Copy the parts of a local MathJax 2 (Debian's libjs-mathjax) that the pages use into out/mathjax;
    return the script URL relative to the pages, or None (then the pages load MathJax from its CDN)."""
    source = next((d for d in MATHJAX_DIRS if (d / "MathJax.js").is_file()), None)
    if source is None:
        return None
    target = out / "mathjax"
    shutil.rmtree(target, ignore_errors=True)
    for part in MATHJAX_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, symlinks=False)
        else:
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / part, target / part)
    return f"mathjax/MathJax.js?config={MATHJAX_CONFIG}"


def lesson_paths(notebooks: Path) -> list[Path]:
    """The lessons in reading order: files named NN_something.ipynb, sorted by name."""
    if not notebooks.is_dir():
        raise ValueError(f"notebooks must be a directory, got {notebooks}")
    return sorted(p for p in notebooks.iterdir() if LESSON_NAME.match(p.name))


def lesson_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The first markdown heading of the notebook (without the #), else `fallback`."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            match = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
            if match:
                return match.group(1)
    return fallback


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """The notebook at `path`, as nbformat version 4."""
    import nbformat

    return nbformat.read(path, as_version=4)


def source_digest(nb: nbformat.NotebookNode) -> str:
    """A fingerprint of the lesson's cell sources (outputs excluded): are stored timings still current?"""
    text = json.dumps([[cell.cell_type, cell.source] for cell in nb.cells])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def execute(nb: nbformat.NotebookNode, cwd: Path, kernel: str, timeout: int) -> tuple[float, str | None]:
    """Run every cell in a fresh kernel; return (wall seconds, error summary or None).
    The kernel process's own stderr (transport warnings) is kept out of the build log."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    client = NotebookClient(nb, kernel_name=kernel, timeout=timeout, record_timing=True,
                            store_widget_state=True, resources={"metadata": {"path": str(cwd)}})
    start = time.perf_counter()
    with tempfile.TemporaryFile() as kernel_log:
        try:
            client.execute(stderr=kernel_log)
            error = None
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
            lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines() or [type(exc).__name__]
            error = f"{type(exc).__name__}: {lines[-1][:300]}"
            if isinstance(exc, DeadKernelError):
                kernel_log.seek(0)
                error += " | kernel stderr: " + kernel_log.read().decode(errors="replace")[-500:]
    return time.perf_counter() - start, error


def stored_seconds(nb: nbformat.NotebookNode) -> float | None:
    """Seconds between the first cell's start and the last cell's reply, from stored metadata."""
    stamps = []
    for cell in nb.cells:
        timing = cell.get("metadata", {}).get("execution", {})
        for key in ("iopub.status.busy", "shell.execute_reply"):
            if key in timing:
                stamps.append(dt.datetime.fromisoformat(timing[key].replace("Z", "+00:00")))
    return (max(stamps) - min(stamps)).total_seconds() if len(stamps) >= 2 else None


def tqdm_text(model_id: str, models: dict) -> str | None:
    """A tqdm progress bar (HBox of HTML, FloatProgress, HTML) as its final text, else None."""
    box = models.get(model_id, {})
    children = [c.replace("IPY_MODEL_", "") for c in box.get("state", {}).get("children", [])]
    kinds = [models.get(c, {}).get("model_name") for c in children]
    if kinds != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    left, bar, right = (models[c]["state"] for c in children)
    done = bar.get("value", 0) / bar["max"] if bar.get("max") else 0.0
    filled = int(round(10 * min(max(done, 0.0), 1.0)))
    left_text, right_text = (html.unescape(w.get("value", "")) for w in (left, right))  # HTML widgets
    return f"{left_text}|{'█' * filled}{' ' * (10 - filled)}| {right_text}"


def replace_widget_output(output: nbformat.NotebookNode, models: dict) -> None:
    """Swap a widget view for something a static page can show (tqdm text or a short note)."""
    data = output["data"]
    view = data.pop(WIDGET_VIEW)
    text = tqdm_text(view.get("model_id", ""), models)
    plain = data.get("text/plain", "")
    if text is None and plain and not re.match(r"^[A-Za-z_]\w*\(", plain):
        text = plain  # a widget whose repr is readable text (tqdm without saved state)
    if text is not None:
        output["data"] = {"text/html": f'<pre class="dl-progress">{html.escape(text)}</pre>'}
    else:
        output["data"] = {"text/html": WIDGET_NOTE}


def strip_widgets(nb: nbformat.NotebookNode) -> None:
    """Replace every widget-view output and drop the saved widget state (it would load JS)."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {})
    models = state.get("state", {})
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if WIDGET_VIEW in output.get("data", {}):
                replace_widget_output(output, models)


def nav_html(lessons: list[dict], i: int) -> str:
    """Previous / contents / next links for lesson i."""
    def link(j: int, rel: str, arrow_left: str, arrow_right: str) -> str:
        if not 0 <= j < len(lessons):
            return f'<span class="dl-nav-{rel} dl-nav-empty"></span>'
        return (f'<a class="dl-nav-{rel}" rel="{rel}" href="{lessons[j]["html"]}">'
                f'{arrow_left}{html.escape(lessons[j]["title"])}{arrow_right}</a>')
    return (f'<nav class="dl-nav">{link(i - 1, "prev", "← ", "")}'
            f'<a class="dl-nav-index" href="index.html">Contents</a>{link(i + 1, "next", "", " →")}</nav>')


def render_lesson(nb: nbformat.NotebookNode, lesson: dict, nav: str, notebooks: Path,
                  mathjax_url: str | None = None) -> str:
    """One lesson as an HTML page (images as data URIs, book navigation added)."""
    strip_widgets(nb)
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="book", extra_template_basedirs=[str(TEMPLATES)])
    if mathjax_url:
        exporter.mathjax_url = mathjax_url
    exporter.embed_images = True  # markdown images too, not only outputs
    resources = {"metadata": {"name": lesson["title"], "path": str(notebooks)}, "book_nav": nav}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    # links between lessons (e.g. lesson 00's table) point at the book's pages, not the notebooks
    return re.sub(r'href="(\d\d_[A-Za-z0-9_]+)\.ipynb', r'href="\1.html', body)


def time_label(lesson: dict) -> str:
    if lesson.get("error"):
        return f'failed: {html.escape(lesson["error"])}'
    if lesson["seconds"] is None:
        return "not run"
    return f'{lesson["seconds"]:.0f} s' + (" (stored run)" if lesson["source"] == "stored" else "")


def index_html(lessons: list[dict], machine: str, mode: str, built: str) -> str:
    """The contents page: every lesson in order with its execution time."""
    rows = "\n".join(
        f'<tr><td class="dl-num">{x["notebook"][:2]}</td><td><a href="{x["html"]}">{html.escape(x["title"])}</a></td>'
        f'<td class="dl-time">{time_label(x)}</td></tr>' for x in lessons)
    how = ("executed top to bottom in a fresh kernel while building this book" if mode == "executed"
           else "rendered from the notebooks' stored outputs; times are those of their stored runs")
    return (INDEX_TEMPLATE.replace("{rows}", rows).replace("{machine}", html.escape(machine))
            .replace("{how}", how).replace("{built}", built))


INDEX_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>Diffusion lessons</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.5; color: #222; }
table { border-collapse: collapse; width: 100%; }
td { padding: 0.35rem 0.5rem; border-bottom: 1px solid #ddd; }
td.dl-num { color: #888; width: 2rem; }
td.dl-time { text-align: right; white-space: nowrap; color: #555; }
a { color: #0b5cad; text-decoration: none; } a:hover { text-decoration: underline; }
.dl-meta { color: #666; font-size: 0.9rem; }
</style></head>
<body>
<h1>Diffusion lessons</h1>
<p>How image generators turn TV static into pictures, one notebook per idea. Read the rendered
lessons here; run them yourself with <code>make lab</code> to move the sliders.</p>
<table class="dl-lessons">
{rows}
</table>
<p class="dl-meta">Lessons {how}. Time per lesson on {machine}. Built {built}.</p>
</body></html>
"""


def load_lesson(path: Path, execute_it: bool, kernel: str, timeout: int) -> tuple[nbformat.NotebookNode, dict]:
    """Read (and optionally execute) one lesson; return it with its record for the index."""
    nb = read_notebook(path)
    lesson = {"notebook": path.name, "html": path.with_suffix(".html").name,
              "title": lesson_title(nb, path.stem), "source_digest": source_digest(nb), "error": None}
    if execute_it:
        print(f"executing {path.name} ...", end=" ", flush=True)
        seconds, lesson["error"] = execute(nb, path.parent, kernel, timeout)
        print(f"{seconds:.1f} s" + (f"  FAILED: {lesson['error']}" if lesson["error"] else ""), flush=True)
        lesson.update(seconds=round(seconds, 1), source="executed")
    else:
        seconds = stored_seconds(nb)
        lesson.update(seconds=None if seconds is None else round(seconds, 1), source="stored")
    return nb, lesson


def build_book(notebooks: Path, out: Path, execute_it: bool = True, kernel: str = "diffusion-lessons",
               timeout: int = 900) -> list[dict]:
    """Execute (optionally) and render every lesson into `out`; return the lesson records."""
    paths = lesson_paths(notebooks)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.html"):
        stale.unlink()
    loaded = [load_lesson(p, execute_it, kernel, timeout) for p in paths]
    lessons = [lesson for _, lesson in loaded]
    mathjax_url = copy_mathjax(out)
    for i, (nb, lesson) in enumerate(loaded):
        page = render_lesson(nb, lesson, nav_html(lessons, i), notebooks, mathjax_url)
        (out / lesson["html"]).write_text(page, encoding="utf-8")
    mode = "executed" if execute_it else "stored"
    built = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    machine = machine_info()
    (out / "index.html").write_text(index_html(lessons, machine_label(machine), mode, built), encoding="utf-8")
    record = {"built": built, "mode": mode, "machine": machine, "lessons": lessons}
    (out / "timings.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return lessons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book")
    parser.add_argument("--no-execute", dest="execute", action="store_false",
                        help="render the stored notebooks as they are (fast)")
    parser.add_argument("--kernel", default="diffusion-lessons")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    lessons = build_book(args.notebooks, args.out, args.execute, args.kernel, args.timeout)
    failed = [x["notebook"] for x in lessons if x["error"]]
    print(f"book: {len(lessons)} lessons -> {args.out / 'index.html'} in {time.perf_counter() - start:.1f} s")
    if failed:
        print(f"FAILED to execute: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
