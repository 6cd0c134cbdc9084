"""Make PyPI's torchvision wheel load beside a CPU-only torch, as a new wheel ``<version>+cpushim``.

Usage: ``python scripts/cpu_torchvision.py --torch-wheel torch-2.13.0+cpu-....whl --out wheelhouse/``

PyPI's Linux torchvision is built against torch's CUDA build: its ``_C.so`` and ``image.so`` need
``libc10_cuda.so`` and ``libtorch_cuda.so``, which a CPU torch does not have, so its C extension fails to load
and ``import torchvision`` (hence ``import timm``) stops with "operator torchvision::nms does not exist".
Where PyTorch's CPU wheel index is reachable, take torchvision's ``+cpu`` build from there instead
(``TORCH_INDEX_URL`` in ``scripts/make_wheelhouse.sh``); where it is not, this script:

1. downloads the torchvision release that matches the torch wheel (torch 2.N.x pairs with 0.(N+15).x);
2. compiles ``docker/torchvision_cpu_shim.c`` (stand-ins for the few c10::cuda symbols; each one aborts
   with a message if it is ever called, which a CPU torch never does) into ``torchvision.libs/``;
3. points the two extensions at it and at the CUDA runtime the wheel bundles (``patchelf``), and drops
   ``libtorch_cuda.so`` from what they need;
4. writes the result as a new wheel with the local version ``+cpushim`` and a fresh ``RECORD``.

torchvision's CPU kernels (nms, roi_align, JPEG/PNG decoding, ...) are the wheel's own compiled code,
unchanged. Needs ``gcc`` and ``patchelf`` (``apt-get install -y gcc patchelf``).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIM_SOURCE = ROOT / "docker" / "torchvision_cpu_shim.c"
SHIM_NAME = "libtorchvision_cpu_shim.so"
LOCAL_LABEL = "cpushim"  # PEP 440 local version label of the wheel this script writes
FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # zip entry times: the same input gives the same wheel, byte for byte
CUDA_ONLY = ("libtorch_cuda.so", "libc10_cuda.so")  # what a CPU torch lacks; the shim stands in


def matching_torchvision(torch_version: str) -> str:
    """The torchvision release built for a torch release: 2.13.0 -> 0.28.0 (minor + 15, same patch)."""
    match = re.match(r"^2\.(\d+)\.(\d+)", torch_version)
    if match is None:
        raise SystemExit(f"cannot tell which torchvision matches torch {torch_version!r}: pass --torchvision")
    return f"0.{int(match.group(1)) + 15}.{match.group(2)}"


def torch_version_of(wheel: Path) -> str:
    """The version in a wheel's file name (``torch-2.13.0+cpu-cp311-...whl`` -> ``2.13.0+cpu``)."""
    return wheel.name.split("-")[1]


def download(version: str, python: str, into: Path) -> Path:
    """PyPI's torchvision ``version`` wheel for this Python (no dependencies)."""
    subprocess.run([python, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest",
                    str(into), f"torchvision=={version}"], check=True)
    (wheel,) = into.glob(f"torchvision-{version}-*.whl")
    return wheel


def patch_extensions(tree: Path) -> None:
    """Build the shim into ``torchvision.libs/`` and relink every extension that needs CUDA torch."""
    libs = tree / "torchvision.libs"
    libs.mkdir(exist_ok=True)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", "-Werror", f"-Wl,-soname,{SHIM_NAME}",
                    "-o", str(libs / SHIM_NAME), str(SHIM_SOURCE)], check=True)
    cudart = sorted(path.name for path in libs.glob("libcudart*.so*"))
    for extension in sorted((tree / "torchvision").glob("*.so")):
        needed = subprocess.run(["patchelf", "--print-needed", str(extension)], check=True,
                                capture_output=True, text=True).stdout.split()
        if not set(CUDA_ONLY) & set(needed):
            continue
        command = ["patchelf", "--set-rpath", "$ORIGIN/../torchvision.libs"]
        command += ["--replace-needed", "libc10_cuda.so", SHIM_NAME] if "libc10_cuda.so" in needed else \
            ["--add-needed", SHIM_NAME]
        if "libtorch_cuda.so" in needed:
            command += ["--remove-needed", "libtorch_cuda.so"]
        for name in needed:
            if name.startswith("libcudart.so") and cudart:  # the unhashed soname: use the bundled runtime
                command += ["--replace-needed", name, cudart[0]]
        subprocess.run([*command, str(extension)], check=True)


def relabel(tree: Path, version: str, new_version: str) -> str:
    """Rename the dist-info to ``new_version`` and write it into METADATA and version.py; returns its name."""
    old = tree / f"torchvision-{version}.dist-info"
    new = tree / f"torchvision-{new_version}.dist-info"
    old.rename(new)
    metadata = new / "METADATA"
    metadata.write_text(re.sub(r"(?m)^Version: .*$", f"Version: {new_version}", metadata.read_text(),
                               count=1))
    version_py = tree / "torchvision" / "version.py"
    version_py.write_text(re.sub(r"(?m)^__version__ = .*$", f"__version__ = '{new_version}'",
                                 version_py.read_text(), count=1))
    return new.name


def pack(tree: Path, dist_info: str, out: Path) -> Path:
    """Zip ``tree`` as a wheel named from its dist-info and WHEEL tag, with a fresh RECORD."""
    tag = re.search(r"(?m)^Tag: (.+)$", (tree / dist_info / "WHEEL").read_text()).group(1).strip()
    record_name = f"{dist_info}/RECORD"
    files = sorted(path for path in tree.rglob("*") if path.is_file() and path.relative_to(tree).as_posix()
                   != record_name)
    rows = []
    wheel = out / f"{dist_info.removesuffix('.dist-info')}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            data = path.read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            name = path.relative_to(tree).as_posix()
            rows.append((name, f"sha256={digest}", str(len(data))))
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([*rows, (record_name, "", "")])
        archive.writestr(zipfile.ZipInfo(record_name, date_time=FIXED_TIME), text.getvalue())
    return wheel


def build(torch_wheel: Path, out: Path, torchvision: str | None, python: str) -> Path:
    """Download, patch and repack torchvision for ``torch_wheel``; returns the new wheel's path."""
    version = torchvision or matching_torchvision(torch_version_of(torch_wheel))
    for tool in ("gcc", "patchelf"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install -y {tool}")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cpu-torchvision-") as scratch:
        wheel = download(version, python, Path(scratch))
        tree = Path(scratch) / "tree"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(tree)
        for path in tree.rglob("*.so*"):  # zipfile drops permissions; extensions must stay executable
            path.chmod(0o755)
        patch_extensions(tree)
        dist_info = relabel(tree, version, f"{version}+{LOCAL_LABEL}")
        return pack(tree, dist_info, out)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the path of the wheel it wrote."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-wheel", type=Path, required=True, help="the CPU torch wheel to pair with")
    parser.add_argument("--out", type=Path, required=True, help="folder for the new wheel (the wheelhouse)")
    parser.add_argument("--torchvision", help="torchvision version (default: the one matching torch)")
    parser.add_argument("--python", default=sys.executable, help="Python whose pip downloads (3.11)")
    args = parser.parse_args(argv)
    print(build(args.torch_wheel, args.out, args.torchvision, args.python))
    return 0


if __name__ == "__main__":
    sys.exit(main())
