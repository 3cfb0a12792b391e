#!/usr/bin/env bash
# The main job: train the SmartCash detector on the bundled synthetic sample (SmartCash .npy layout, 17 classes).
# Creates .venv and data/sample when missing. Extra arguments are passed to `yolo train`, e.g. epochs=5.
set -euo pipefail
source "$(dirname "$0")/env.sh"
python -c "from smartcash_ultra.tools.sample_data import ensure_sample_dataset as e; print(e('data/sample'))"
yolo train cfg=cfg/smartcash_cspdarknet.yaml model=cfg/models/smartcash_cspdarknet_yolov5n.yaml \
    data=data/sample/data.yaml imgsz=320 epochs=20 batch=16 workers=2 project="$ROOT/runs/sample" name=cspdarknet \
    exist_ok=True "$@"
