"""``build_dataloaders``: the data loaders a SmartCash training builds, without a training.

For users who inspect or reuse their data (SmartCash's ``create_data_loaders``). A trainer cannot serve: building one
makes a run folder, and its ``get_dataloader`` needs the model it builds later (``'str' object has no attribute
'stride'`` before training). The loaders are built as Ultralytics' ``DetectionTrainer.get_dataloader`` builds them
with a SmartCash dataset: the SmartCash training settings under the arguments given, training with augmentation and
shuffled, the other splits rectangular at twice the batch with twice the workers (none on CPU, as the trainer sets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smartcash_ultra.data.dataset import build_smartcash_dataset
from smartcash_ultra.utils.settings import with_smartcash_defaults

STRIDE = 32
"""The largest stride of every SmartCash model, and the trainer's floor for it: the grid sizes round up to it."""


def build_dataloaders(
    data: str | Path, imgsz: int = 640, batch: int = 16, splits: tuple[str, ...] | None = None, **overrides: Any
) -> dict[str, Any]:
    """Return ``{split: loader}`` over the SmartCash dataset of the data YAML ``data``, as training builds them.

    ``splits`` defaults to those the data YAML names of ``train``, ``val`` and ``test``. ``overrides`` are training
    arguments (``workers``, ``device``, ``mosaic``, ``fraction``, ``cache``...), merged over the SmartCash settings
    as for a training. Each loader yields Ultralytics' batches (``img`` uint8 BCHW, ``cls``, ``bboxes``,
    ``batch_idx``, ``im_file``...); ``loader.dataset`` is the :class:`SmartCashDataset`.

    Raises:
        RuntimeError: as training's, naming the data YAML, when it cannot be read or a split it names is missing.
        KeyError: naming a split of ``splits`` that the data YAML does not name.
    """
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import DEFAULT_CFG
    from ultralytics.utils.torch_utils import select_device

    given = {**overrides, "data": str(data), "imgsz": imgsz, "batch": batch}
    args = get_cfg(DEFAULT_CFG, with_smartcash_defaults(given))
    try:
        dataset = check_det_dataset(args.data)
    except Exception as e:  # as BaseTrainer.get_dataset says it
        raise RuntimeError(f"Dataset '{args.data}' error: {e}") from e
    device = select_device(args.device, verbose=False)
    workers = 0 if device.type in {"cpu", "mps"} else args.workers
    loaders = {}
    for split in splits or [s for s in ("train", "val", "test") if dataset.get(s)]:
        if not dataset.get(split):
            raise KeyError(f"{args.data} names no '{split}' split")
        train = split == "train"
        size = batch if train else batch * 2
        mode = "train" if train else "val"
        images = build_smartcash_dataset(args, dataset[split], size, dataset, mode=mode, rect=not train, stride=STRIDE)
        loaders[split] = build_dataloader(
            images, batch=size, workers=workers if train else workers * 2, shuffle=train, rank=-1, device=device
        )
    return loaders
