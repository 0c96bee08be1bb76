"""Execute lessons in place, as they are stored: python tools/execute_lesson.py notebooks/04_sampling.ipynb ...

Each notebook runs top to bottom in a fresh kernel (the diffusion-lessons kernel), with the widget state
saved, so the stored outputs show progress bars in their final state; prints each lesson's time.
A lesson that fails is not written back.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_book import execute  # noqa: E402


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__)
        return 2
    failed = 0
    for name in paths:
        path = Path(name).resolve()
        nb = nbformat.read(path, as_version=4)
        seconds, error = execute(nb, path.parent, "diffusion-lessons", timeout=600)
        if error:
            print(f"{path.name}: FAILED after {seconds:.0f} s: {error}")
            failed += 1
            continue
        nbformat.write(nb, path)
        print(f"{path.name}: executed in {seconds:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
