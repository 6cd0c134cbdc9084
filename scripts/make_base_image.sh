#!/usr/bin/env bash
# Make a Python 3.11 base image from Debian's packages, for hosts that reach no image registry.
#
#   scripts/make_base_image.sh [TAG]          # default TAG: zeal-base:bookworm
#   then: scripts/docker_build.sh --base zeal-base:bookworm   (or docker build --build-arg BASE_IMAGE=...)
#
# Debian bookworm ships Python 3.11 (the version the pins in requirements.txt are made for). mmdebstrap
# (apt-get install mmdebstrap; no root daemon, no registry) writes a minimal root filesystem as a tar
# stream, and `docker import` turns it into an image. Only Debian mirrors are needed, over plain HTTP by
# default (an HTTPS-inspecting proxy cannot get in the way). Environment:
#   DEBIAN_MIRROR    default http://deb.debian.org/debian
#   DEBIAN_SECURITY  default http://deb.debian.org/debian-security ("" leaves security updates out)
#   SUITE            default bookworm (its python3 is 3.11; trixie's would be 3.13)
set -euo pipefail

tag="${1:-zeal-base:bookworm}"
suite="${SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY-http://deb.debian.org/debian-security}"

command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install -y mmdebstrap" >&2; exit 2; }
command -v docker >/dev/null || { echo "docker is missing: apt-get install -y docker.io" >&2; exit 2; }

sources=("deb $mirror $suite main" "deb $mirror $suite-updates main")
[[ -n "$security" ]] && sources+=("deb $security $suite-security main")

# python3-venv: venv + ensurepip (pip goes into the app's virtual environment, not the system);
# ca-certificates: a sane default trust store (a proxy's own CA is passed to the build as a secret instead).
packages="python3,python3-venv,ca-certificates"

start=$(date +%s)
# --variant=apt: Essential packages plus apt, nothing else. Documentation, man pages and translations are
# not unpacked, and apt's lists are removed at the end: the image keeps only what runs.
mmdebstrap --variant=apt --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$suite" - "${sources[@]}" \
  | docker import \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python3"]' \
      --message "Debian $suite with python3 (mmdebstrap, scripts/make_base_image.sh)" \
      - "$tag" >/dev/null

docker run --rm "$tag" python3 -c 'import sys, venv, ensurepip; assert sys.version_info[:2] == (3, 11), sys.version'
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "base image $tag: $(docker run --rm "$tag" python3 -V), $((size / 1000000)) MB, made in $(( $(date +%s) - start )) s"
