"""The install as the Python ecosystem expects it: declared dependencies, pinned constraints, the ``zeal``
console script, a command line whose help imports nothing heavy, and CI running the README's commands."""

from __future__ import annotations

import ast
import re
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TEST_TOOLS = {"pytest", "pytest-timeout", "ruff", "playwright", "imagecorruptions", "setuptools"}
# Import names whose distribution is called something else.
DISTRIBUTION_OF = {"PIL": "pillow", "sklearn": "scikit-learn", "yaml": "pyyaml", "umap": "umap-learn"}
HEAVY = ("torch", "timm", "torchvision", "sklearn", "scipy", "umap", "numba", "streamlit", "pandas", "numpy",
         "matplotlib", "plotly", "frouros", "safetensors", "PIL")


def name_of(requirement: str) -> str:
    """``"scikit-learn>=1.9"`` -> ``"scikit-learn"`` (normalised as PEP 503 does)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_names() -> set[str]:
    return {name_of(item) for item in PYPROJECT["project"]["dependencies"]}


def third_party_imports(*paths: Path) -> set[str]:
    """Top-level modules imported by the files under ``paths`` that are neither stdlib nor ours."""
    found = set()
    for path in paths:
        for file in [path] if path.is_file() else path.rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    ours = {"zeal_core", "app_pages", "benchmarks", "tests", "__future__"}
    return {name for name in found if name not in sys.stdlib_module_names and name not in ours}


def test_runtime_dependencies_hold_no_test_tool_and_the_test_extra_holds_them_all() -> None:
    assert not runtime_names() & TEST_TOOLS
    assert {name_of(item) for item in PYPROJECT["project"]["optional-dependencies"]["test"]} == TEST_TOOLS


def test_everything_the_library_and_the_app_import_is_a_runtime_dependency() -> None:
    imported = third_party_imports(ROOT / "zeal_core", ROOT / "app_pages", ROOT / "app.py")
    declared = runtime_names()
    missing = {name for name in imported if name_of(DISTRIBUTION_OF.get(name, name)) not in declared}
    assert not missing, f"imported but not declared in pyproject.toml [project] dependencies: {missing}"


def test_every_dependency_is_pinned_in_the_constraints() -> None:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    pinned = {name_of(line) for line in lines if line}
    declared = runtime_names() | TEST_TOOLS
    assert declared <= pinned, f"not pinned in requirements.txt: {declared - pinned}"
    assert not pinned - declared, f"pinned but not declared: {pinned - declared}"


def test_the_console_script_is_the_command_line() -> None:
    assert PYPROJECT["project"]["scripts"] == {"zeal": "zeal_core.cli:main"}
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert packages == ["zeal_core", "zeal_core.*"]  # benchmarks/, app_pages/ and tests/ are not installed


def test_check_help_imports_no_heavy_module() -> None:
    code = ("import sys\nfrom zeal_core.cli import build_parser\nparser = build_parser()\n"
            "for argv in (['--help'], ['check', '--help'], ['history', '--help']):\n"
            "    try:\n        parser.parse_args(argv)\n    except SystemExit:\n        pass\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_ci_runs_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv .venv && . .venv/bin/activate" in quick_start and ci
    assert 'pip install -c requirements.txt -e ".[test]" && python -m pytest -q' in quick_start
    assert 'pip install -q -c requirements.txt -e ".[test]"' in ci and "\npython -m pytest -q\n" in ci


@pytest.mark.slow
def test_the_zeal_script_installed_in_a_fresh_venv_runs(tmp_path: Path) -> None:
    """An editable install (no dependencies: the venv sees this one's packages) makes a working ``zeal``."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "_parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-build-isolation", "--no-index", "-q", "-e", str(ROOT)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    zeal = venv / "bin" / "zeal"
    help_text = subprocess.run([str(zeal), "check", "--help"], capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0 and help_text.stdout.startswith("usage: zeal check"), help_text.stderr
    # A real command through the script, from elsewhere: exit code 2, a one-line reason naming the fix.
    missing = subprocess.run([str(zeal), "history", "show", "999"], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
    assert missing.returncode == 2 and "no check 999" in missing.stderr and "`zeal history`" in missing.stderr
    assert missing.stderr.count("\n") == 1
