#!/usr/bin/env bash
# Build the demo image with BuildKit (docs/deploy.md).
#
#   scripts/docker_build.sh [--tag T] [--base IMAGE] [--online CA_BUNDLE] [docker build options...]
#
#   --tag T            image tag (default zeal-drift-lab:latest)
#   --base IMAGE       base image (default: the Dockerfile's python:3.11-slim; zeal-base:bookworm from
#                      scripts/make_base_image.sh where no registry is reachable)
#   --online BUNDLE    install from PyPI through a TLS-inspecting proxy, trusting BUNDLE (a CA bundle file)
#                      as a build secret; without it every wheel comes from wheelhouse/ (--no-index)
#
# Needs wheelhouse/ (scripts/make_wheelhouse.sh; with --online, `--torch-only` is enough). Docker clients
# from 23 on build with BuildKit only through the buildx plugin; where it is missing this script uses a
# client that still has BuildKit built in (DOCKER_BUILDKIT=1), e.g. Debian's /usr/bin/docker (20.10).
# Prints "build_s=<seconds>" last.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tag="zeal-drift-lab:latest"
args=()
while (($#)); do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --base) args+=(--build-arg "BASE_IMAGE=$2"); shift 2 ;;
        --online) args+=(--build-arg "PYPI_URL=${PYPI_URL:-https://pypi.org/simple}" --secret "id=pip_ca,src=$2")
                  shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done

[[ -f "$root/wheelhouse/requirements-image.txt" ]] \
    || { echo "no wheelhouse: run scripts/make_wheelhouse.sh first" >&2; exit 2; }

# A client that can build with BuildKit: buildx where installed, else one with BuildKit built in.
if docker buildx version >/dev/null 2>&1; then
    build=(docker buildx build --load)
else
    client=""
    for candidate in docker /usr/bin/docker; do
        major=$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1) || continue
        if [[ -n "$major" && "$major" -lt 23 ]]; then client="$candidate"; break; fi
    done
    [[ -n "$client" ]] || { echo "no BuildKit-capable docker client: install docker-buildx" >&2; exit 2; }
    build=(env DOCKER_BUILDKIT=1 "$client" build)
fi

start=$(date +%s.%N)
"${build[@]}" --progress=plain -t "$tag" "${args[@]}" "$root"
echo "build_s=$(python3 -c "print(round($(date +%s.%N) - $start, 1))")"
