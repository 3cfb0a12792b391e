# Sourced by the other scripts: an offline-safe environment and the project's virtual environment in .venv,
# created (or refreshed when pyproject.toml changes) from pyproject.toml alone.
export YOLO_OFFLINE=1           # Ultralytics: never probe or use the network
export YOLO_AUTOINSTALL=false   # Ultralytics: never pip-install a missing package at run time
export HF_HUB_OFFLINE=1         # timm/huggingface: never reach a hub
export PYTHONUNBUFFERED=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
    PYTHON="${PYTHON:-python3}"
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "smartcash-ultra needs Python >= 3.10"'
    echo "Setting up $VENV (torch and torchvision resolve together from the registry; a few minutes)..."
    # torch's CUDA build and its libraries take about 6 GB installed, plus the wheels while pip installs them.
    FREE_GB=$(df -Pk "$ROOT" | awk 'NR==2 {print int($4 / 1048576)}')
    if [ "${FREE_GB:-0}" -lt 10 ]; then
        echo "WARNING: only ${FREE_GB} GB free on the disk of $ROOT; installing torch needs about 10 GB." >&2
    fi
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    # --no-cache-dir: pip would otherwise keep a second copy of the multi-GB torch wheels in ~/.cache/pip.
    "$VENV/bin/python" -m pip install --quiet --no-cache-dir --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --no-cache-dir -e "$ROOT[dev]"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
