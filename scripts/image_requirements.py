"""Print the pinned runtime requirements of the Docker image: the app's dependencies, no test tools.

Usage: ``python scripts/image_requirements.py --torch 2.13.0+cpu --torchvision 0.28.0+cpushim``
(``scripts/make_wheelhouse.sh`` writes its output to ``wheelhouse/requirements-image.txt``; with
``--extra-index-url`` it also makes a requirements file for Streamlit Community Cloud, see docs/deploy.md).

Where the list comes from, in order:

1. ``[project].dependencies`` of ``pyproject.toml`` when it has any (the packaging layout where runtime
   dependencies live in the project and test tools in an extra);
2. otherwise ``requirements.txt`` less the test and lint tools (``TEST_ONLY``, plus any name listed in a
   ``test``/``dev`` extra of ``pyproject.toml``).

Every ``name==version`` pin found in ``requirements*.txt`` and ``constraints*.txt`` is then applied to a
dependency given without one, so the image gets the same known-good versions as a developer's machine. torch
and torchvision are replaced by the CPU pair that the wheelhouse holds (``--torch``, ``--torchvision``).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
# Tools for tests, lint and reference implementations that the running app never imports.
TEST_ONLY = frozenset({"pytest", "pytest-timeout", "ruff", "playwright", "imagecorruptions", "setuptools"})
CPU_PAIR = ("torch", "torchvision")  # replaced by the CPU builds the wheelhouse holds
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(#.*)?$")


class Requirement(NamedTuple):
    """One requirement line: ``name[extras]spec ; marker``."""

    name: str  # canonical distribution name
    extras: str  # "[a,b]" or ""
    spec: str  # version specifier without spaces, e.g. "==1.0.31" or ">=2" or ""
    marker: str  # environment marker without the ";", or ""

    def line(self) -> str:
        """The requirement as a requirements-file line."""
        return f"{self.name}{self.extras}{self.spec}" + (f" ; {self.marker}" if self.marker else "")


def canonical(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(line: str) -> Requirement | None:
    """One requirement line split into its parts; None for options (``-r``, ``-c``, ...) and comments."""
    stripped = line.strip()
    if not stripped or stripped.startswith(("#", "-")):
        return None
    match = _REQUIREMENT.match(stripped)
    if match is None:
        return None
    spec, _, marker = (match.group(3) or "").partition(";")
    return Requirement(canonical(match.group(1)), match.group(2) or "", spec.replace(" ", ""), marker.strip())


def read_lines(path: Path) -> list[Requirement]:
    """The requirements in one requirements or constraints file (an absent file has none)."""
    if not path.is_file():
        return []
    return [item for item in map(parse, path.read_text().splitlines()) if item is not None]


def exact_pins(root: Path) -> dict[str, str]:
    """``name -> "==version"`` for every exact pin in the project's requirements and constraints files."""
    pins: dict[str, str] = {}
    for path in sorted(root.glob("requirements*.txt")) + sorted(root.glob("constraints*.txt")):
        for item in read_lines(path):
            if re.fullmatch(r"==[^,]+", item.spec):
                pins.setdefault(item.name, item.spec)
    return pins


def runtime_requirements(root: Path) -> list[Requirement]:
    """The app's runtime dependencies, from pyproject or requirements.txt."""
    project = tomllib.loads((root / "pyproject.toml").read_text()).get("project", {})
    declared = [item for item in map(parse, project.get("dependencies", [])) if item is not None]
    if declared:
        return declared
    extras = project.get("optional-dependencies", {})
    test_names = {item.name for key in ("test", "tests", "dev") for item in map(parse, extras.get(key, []))
                  if item is not None}
    return [item for item in read_lines(root / "requirements.txt") if item.name not in TEST_ONLY | test_names]


def image_requirements(root: Path, torch: str, torchvision: str) -> list[str]:
    """Requirement lines for the image: runtime dependencies, pinned, with the CPU torch pair."""
    pins = exact_pins(root)
    pins.update({"torch": f"=={torch}", "torchvision": f"=={torchvision}"})
    chosen = []
    for item in runtime_requirements(root):
        if item.name in CPU_PAIR or not item.spec.startswith("=="):
            item = item._replace(spec=pins.get(item.name, item.spec))
        chosen.append(item)
    names = {item.name for item in chosen}
    chosen += [Requirement(name, "", pins[name], "") for name in CPU_PAIR if name not in names]
    return [item.line() for item in chosen]


def main(argv: list[str] | None = None) -> int:
    """Print the image's requirement lines, one per line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", required=True, help="torch version in the wheelhouse, e.g. 2.13.0+cpu")
    parser.add_argument("--torchvision", required=True, help="torchvision version in the wheelhouse")
    parser.add_argument("--root", type=Path, default=ROOT, help="project root (default: this checkout)")
    parser.add_argument("--extra-index-url", help="an index line to put first (PyPI lacks CPU torch builds), "
                        "e.g. for Streamlit Community Cloud's requirements.txt")
    args = parser.parse_args(argv)
    header = [f"--extra-index-url {args.extra_index_url}"] if args.extra_index_url else []
    print("\n".join(header + image_requirements(args.root, args.torch, args.torchvision)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
