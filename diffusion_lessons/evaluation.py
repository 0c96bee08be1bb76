"""The measures the book reports: digit classifier accuracy and diversity (lessons 03-05),
and a shape reader with prompt adherence (lessons 06-07)."""

from __future__ import annotations

# ---- digits ----

# ---- captioned shapes ----
