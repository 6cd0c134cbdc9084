# Zeal Drift Lab: the CPU-only demo image (docs/deploy.md). Build it with BuildKit from a wheelhouse made on
# the host, then run it:
#
#   scripts/make_wheelhouse.sh                     # every runtime wheel, CPU torch, into wheelhouse/
#   DOCKER_BUILDKIT=1 docker build -t zeal-drift-lab .          (or scripts/docker_build.sh)
#   docker run --rm -p 127.0.0.1:8501:8501 zeal-drift-lab       # then open http://127.0.0.1:8501
#
# Where no registry is reachable, make the base from Debian's packages first (scripts/make_base_image.sh)
# and add --build-arg BASE_IMAGE=zeal-base:bookworm. Behind a TLS-inspecting proxy, either keep the default
# offline install (everything from wheelhouse/, --no-index) or let pip reach PyPI through the proxy with its
# CA bundle passed as a build secret, which is mounted for that one step and never stored in a layer:
#
#   scripts/make_wheelhouse.sh --torch-only         # only the CPU torch pair, which PyPI does not have
#   DOCKER_BUILDKIT=1 docker build --build-arg PYPI_URL=https://pypi.org/simple \
#       --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt -t zeal-drift-lab .
#
# There is deliberately no "# syntax=" line: it would make BuildKit pull its Dockerfile frontend from a
# registry. The builder built into Docker 20.10+ understands RUN --mount.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Runtime dependencies only (wheelhouse/requirements-image.txt, from scripts/image_requirements.py): the
# pins of requirements.txt with torch and torchvision replaced by CPU builds, no test or lint tools. The
# wheelhouse is bind-mounted for this step, so no wheel ends up in a layer. Then what no running app needs
# is removed in the same layer (about 0.4 GB): the packages' own test suites, torch's C++ headers and its
# C++ test programs (torch_shm_manager stays). The next step fails the build unless torch is the CPU build
# and torchvision's compiled operators and timm's ResNet-18 work beside it.
ARG PYPI_URL=
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    --mount=type=secret,id=pip_ca \
    set -eu; \
    python3 -m venv /opt/venv; \
    if [ -n "$PYPI_URL" ]; then \
        source="--index-url $PYPI_URL"; \
        if [ -s /run/secrets/pip_ca ]; then source="$source --cert /run/secrets/pip_ca"; fi; \
    else \
        source="--no-index"; \
    fi; \
    pip install --no-cache-dir $source --find-links /wheelhouse -r /wheelhouse/requirements-image.txt; \
    pip check; \
    site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
    find "$site" -depth -type d \( -name tests -o -name test \) -not -path '*.dist-info/*' -exec rm -rf {} +; \
    rm -rf "$site/torch/include"; \
    find "$site/torch/bin" -type f ! -name torch_shm_manager -delete
RUN python -c "import torch, torchvision, timm; from torchvision.ops import nms; \
assert torch.version.cuda is None, 'torch is not the CPU build'; nms(torch.rand(4, 4), torch.rand(4), 0.5); \
timm.create_model('resnet18', num_classes=10).eval()(torch.rand(1, 3, 32, 32)); \
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"

# The app as it runs: code owned by root (read-only to the app), data/models/state writable by the app user.
WORKDIR /app
COPY .streamlit .streamlit
COPY app.py params.yaml pyproject.toml README.md ./
COPY app_pages app_pages
COPY zeal_core zeal_core
# The project itself, editable (its code stays in /app, one copy) and without dependencies (installed
# above): this gives the `zeal` command. No index and no build isolation: setuptools is already there.
RUN set -eu; \
    pip install --no-cache-dir --no-deps --no-index --no-build-isolation -e .; \
    pip check; \
    python -m compileall -q app_pages zeal_core; \
    echo 'zeal:x:10001:10001:Zeal Drift Lab:/home/zeal:/usr/sbin/nologin' >> /etc/passwd; \
    echo 'zeal:x:10001:' >> /etc/group; \
    mkdir -p /home/zeal data models .zeal folders; \
    chown -R 10001:10001 /home/zeal data models .zeal

# The demo mode, locked down for a public URL (docs/deploy.md): digits, small samples, CPU, capped uploads,
# no path on the server typed or shown (folder datasets only from subfolders of ZEAL_FOLDER_ROOTS: mount
# read-only image folders on /app/folders), costly or destructive actions off unless ZEAL_DEMO_ALLOW names
# them. ZEAL_DEMO=0 at `docker run -e` gives the full lab (mount volumes on /app/data and /app/models).
ENV HOME=/home/zeal \
    ZEAL_DEMO=1 \
    ZEAL_FOLDER_ROOTS=/app/folders \
    DVC_NO_ANALYTICS=1 \
    HF_HUB_OFFLINE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
USER 10001:10001

EXPOSE 8501
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]

CMD ["streamlit", "run", "app.py", "--server.port", "8501", "--server.address", "0.0.0.0", \
     "--server.headless", "true"]
