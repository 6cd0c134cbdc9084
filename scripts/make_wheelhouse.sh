#!/usr/bin/env bash
# Fetch, on the host, every wheel the Docker image installs: the offline way through a proxy.
#
#   scripts/make_wheelhouse.sh               # all runtime wheels into wheelhouse/ (offline image build)
#   scripts/make_wheelhouse.sh --torch-only  # only the CPU torch pair (the rest comes from PyPI in the
#                                            # build, through the proxy with --secret id=pip_ca)
#
# The folder also gets requirements-image.txt (scripts/image_requirements.py: runtime dependencies only,
# pinned as in requirements.txt, torch and torchvision replaced by the CPU pair); the Dockerfile installs
# exactly that list. wheelhouse/ is in .gitignore; a second run reuses what is there (a warm wheelhouse).
#
# Environment:
#   WHEELHOUSE       default <repo>/wheelhouse
#   PYTHON           default python3.11 (must be the image's Python, 3.11 on x86_64 Linux)
#   TORCH_WHEEL      a CPU torch wheel file (default: the newest /opt/wheels/torch-*+cpu-cp311-*.whl)
#   TORCH_INDEX_URL  where PyTorch's CPU index is reachable (e.g. https://download.pytorch.org/whl/cpu):
#                    take torch and torchvision +cpu from there instead (TORCH_VERSION, default 2.14.1)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
house="${WHEELHOUSE:-$root/wheelhouse}"
python="${PYTHON:-python3.11}"
torch_only=0
[[ "${1:-}" == "--torch-only" ]] && torch_only=1

"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "need Python 3.11, the image'"'"'s"' \
    || { echo "set PYTHON to a Python 3.11 (the image's version)" >&2; exit 2; }
mkdir -p "$house"
start=$(date +%s)

if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    # Real CPU builds of both, where PyTorch's index is reachable.
    version="${TORCH_VERSION:-2.14.1}"
    vision=$("$python" -c "import sys; sys.path.insert(0, '$root/scripts'); import cpu_torchvision as c; \
print(c.matching_torchvision('$version'))")
    "$python" -m pip download --no-deps --only-binary :all: --index-url "$TORCH_INDEX_URL" --dest "$house" \
        "torch==$version+cpu" "torchvision==$vision+cpu"
    torch_version="$version+cpu"
    vision_version="$vision+cpu"
else
    wheel="${TORCH_WHEEL:-$(ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | sort -V | tail -n 1)}"
    [[ -f "$wheel" ]] || { echo "no CPU torch wheel: set TORCH_WHEEL or TORCH_INDEX_URL" >&2; exit 2; }
    cp -u "$wheel" "$house/"
    torch_version=$(basename "$wheel" | cut -d- -f2)
    vision=$("$python" -c "import sys; sys.path.insert(0, '$root/scripts'); import cpu_torchvision as c; \
print(c.matching_torchvision('$torch_version'))")
    vision_version="$vision+cpushim"
    if ! ls "$house"/torchvision-"$vision_version"-*.whl >/dev/null 2>&1; then
        "$python" "$root/scripts/cpu_torchvision.py" --torch-wheel "$wheel" --out "$house" --python "$python"
    fi
fi

"$python" "$root/scripts/image_requirements.py" --torch "$torch_version" --torchvision "$vision_version" \
    > "$house/requirements-image.txt"

if (( ! torch_only )); then
    # pip wheel downloads wheels (and builds any sdist-only package into one), reusing the folder's content.
    "$python" -m pip wheel --prefer-binary --wheel-dir "$house" --find-links "$house" \
        -r "$house/requirements-image.txt"
fi

count=$(ls "$house"/*.whl | wc -l)
size=$(du -sm "$house" | cut -f1)
echo "wheelhouse $house: $count wheels, $size MB, torch $torch_version, torchvision $vision_version," \
     "$(( $(date +%s) - start )) s"
