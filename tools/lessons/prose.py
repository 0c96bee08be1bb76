"""The result-dependent paragraphs of a lesson, kept in prose_NN.md next to its builder: each starts with a
line "@@ key"; read_prose returns {key: paragraph}."""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def read_prose(name: str) -> dict[str, str]:
    prose = {}
    for part in (HERE / name).read_text().split("\n@@ ")[1:]:
        key, _, text = part.partition("\n")
        prose[key.strip()] = text.strip()
    return prose
