# Zeal Drift Lab, CPU image for a demo deployment (see docs/deploy.md).
#   docker build -t zeal-drift-lab .
#   docker run --rm -p 8501:8501 zeal-drift-lab          # then open http://localhost:8501
# The demo mode (ZEAL_DEMO=1) starts on the embedded digits dataset with small samples on the CPU; set
# ZEAL_DEMO=0 at `docker run -e` for the full defaults.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 \
    HF_HUB_OFFLINE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba \
    ZEAL_DEMO=1 \
    ZEAL_FOLDER_ROOTS=/app/folders

# libgomp1: OpenMP runtime for torch and scikit-learn's CPU kernels; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# CPU-only torch first, from PyTorch's CPU index: the default PyPI wheels bundle CUDA (several GB). The pinned
# requirements then find torch==2.14.1 already installed (2.14.1+cpu satisfies ==2.14.1). Test-only tools
# (pytest, ruff, playwright) are left out of the image.
COPY requirements.txt ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
    && grep -vE '^(playwright|pytest|pytest-timeout|ruff)==' requirements.txt > /tmp/requirements-app.txt \
    && pip install -r /tmp/requirements-app.txt

COPY . .

# Run as an unprivileged user that owns only the folders the app writes to.
RUN useradd --create-home --uid 1000 zeal \
    && mkdir -p data models .zeal folders \
    && chown -R zeal:zeal data models .zeal
USER zeal

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD curl -fsS http://localhost:8501/_stcore/health || exit 1

CMD ["streamlit", "run", "app.py", "--server.port", "8501", "--server.address", "0.0.0.0", \
     "--server.headless", "true", "--browser.gatherUsageStats", "false"]
