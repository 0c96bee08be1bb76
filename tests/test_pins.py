"""One source of truth for dependencies: requirements.txt pins, environment.yml and pyproject.toml agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml  # installed with huggingface_hub, which diffusers needs
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def pins(lines: list[str]) -> dict[str, str]:
    """{canonical name: exact version} from requirement lines; every line must be an exact == pin."""
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):  # blank, comment, or a pip option such as -e .
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"not an exact pin: {line!r}"
        name = canonicalize_name(req.name)
        assert name not in out, f"{name} pinned twice"
        out[name] = specs[0].version
    return out


@pytest.fixture(scope="module")
def requirements() -> dict[str, str]:
    return pins((ROOT / "requirements.txt").read_text().splitlines())


def environment_pip_lines() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one pip section"
    return sections[0]


def test_requirements_pin_the_core_stack(requirements):
    assert requirements["torch"] == "2.13.0"
    for name in ("diffusers", "jupyterlab", "ipywidgets", "matplotlib", "nbval", "pillow", "pytest"):
        assert name in requirements, name


def test_environment_yml_names_the_same_pins(requirements):
    lines = environment_pip_lines()
    assert pins(lines) == requirements
    assert "-e ." in [line.strip() for line in lines]  # conda users get the package too


def test_environment_yml_python_satisfies_requires_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert len(python) == 1
    version = python[0].split("=")[-1]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert Requirement("python" + project["requires-python"]).specifier.contains(version + ".0")


@pytest.mark.parametrize("group", ["dependencies", "dev"])
def test_every_pyproject_range_is_pinned_and_satisfied(requirements, group):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] if group == "dependencies" else project["optional-dependencies"]["dev"]
    assert declared
    for line in declared:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in requirements, f"{name} is in pyproject {group} but not pinned in requirements.txt"
        assert req.specifier.contains(requirements[name], prereleases=True), \
            f"{name}=={requirements[name]} does not satisfy pyproject's {req.specifier}"


def test_every_pin_is_declared_in_pyproject(requirements):
    """A pin with no range in pyproject would be installed by make but missing for pip users."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [x for extra in project["optional-dependencies"].values() for x in extra]
    declared = {canonicalize_name(Requirement(line).name) for line in lines}
    assert set(requirements) <= declared, f"pinned but not declared: {sorted(set(requirements) - declared)}"
