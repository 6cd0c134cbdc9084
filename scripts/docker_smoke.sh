#!/usr/bin/env bash
# Build the demo image, run it on a free loopback port and click through it in Chromium (docs/deploy.md).
#
#   scripts/docker_smoke.sh [--no-build] [--tag T] [--base IMAGE] [--screenshots DIR]
#
# 1. wheelhouse/ (scripts/make_wheelhouse.sh) if there is none, a base image (below), then the image
#    (scripts/docker_build.sh, timed; its log goes to $TMPDIR/zeal-docker-build.log);
# 2. python -m benchmarks.container: docker run on 127.0.0.1, wait for /_stcore/health, then in Chromium
#    train the default model from Home, open the Drift Lab, move a severity slider and read the p-values,
#    check that the Data page offers no folder on the server; check the user, the test tools, Docker's
#    health status and the log; stop and remove the container;
# 3. print one closing line with the figures. Any failure exits non-zero (and the container is removed).
#
# Base image: --base, else python:3.11-slim where it is present or can be pulled, else zeal-base:bookworm
# (made by scripts/make_base_image.sh when missing). Needs Docker, Debian's chromium and a Python with
# the lab's test requirements (playwright): PYTHON, default .venv/bin/python, else python3.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tag="zeal-drift-lab:smoke"
base=""
build=1
shots="$root/screenshots-tmp/docker"
while (($#)); do
    case "$1" in
        --no-build) build=0; shift ;;
        --tag) tag="$2"; shift 2 ;;
        --base) base="$2"; shift 2 ;;
        --screenshots) shots="$2"; shift 2 ;;
        *) echo "unknown option $1 (see the head of $0)" >&2; exit 2 ;;
    esac
done
python="${PYTHON:-$root/.venv/bin/python}"
[[ -x "$python" ]] || python=python3
name="zeal-smoke-$$"
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT

docker info >/dev/null 2>&1 || { echo "no Docker engine: start dockerd (docs/deploy.md)" >&2; exit 2; }
build_s=""
if ((build)); then
    [[ -f "$root/wheelhouse/requirements-image.txt" ]] || "$root/scripts/make_wheelhouse.sh"
    if [[ -z "$base" ]]; then
        if docker image inspect python:3.11-slim >/dev/null 2>&1 || docker pull -q python:3.11-slim >/dev/null 2>&1
        then base=python:3.11-slim
        else
            base=zeal-base:bookworm
            docker image inspect "$base" >/dev/null 2>&1 || "$root/scripts/make_base_image.sh" "$base"
        fi
    fi
    log="${TMPDIR:-/tmp}/zeal-docker-build.log"
    echo "building $tag on $base (log: $log)"
    if ! "$root/scripts/docker_build.sh" --tag "$tag" --base "$base" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "docker smoke FAILED: the image did not build" >&2
        exit 1
    fi
    build_s=$(grep -o 'build_s=[0-9.]*' "$log" | tail -n 1 | cut -d= -f2)
fi

cd "$root"
args=(--image "$tag" --name "$name" --screenshots "$shots")
[[ -n "$build_s" ]] && args+=(--build-s "$build_s")
"$python" -m benchmarks.container "${args[@]}"   # its last line: "docker smoke OK: ..." or "... FAILED: why"
