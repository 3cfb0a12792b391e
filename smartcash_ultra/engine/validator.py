"""``SmartCashValidator``: Ultralytics' detection validator on SmartCash data, reporting mAP75 and per-class AP too.

The figures themselves are Ultralytics' (``ap_per_class`` over 10 IoU thresholds); this only exposes more of them.
Per-class keys avoid the words "metric" and "loss" so ``plot_results`` does not draw one panel per class.
"""

from __future__ import annotations

from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils import LOGGER
from ultralytics.utils.metrics import DetMetrics

from smartcash_ultra.data.dataset import build_smartcash_dataset
from smartcash_ultra.utils.metrics import class_ap


class SmartCashMetrics(DetMetrics):
    """``DetMetrics`` with mAP75 between mAP50 and mAP50-95, plus per-class AP50 and AP50-95 in ``results_dict``."""

    MEAN_KEYS = (
        "metrics/precision(B)",
        "metrics/recall(B)",
        "metrics/mAP50(B)",
        "metrics/mAP75(B)",
        "metrics/mAP50-95(B)",
    )

    @property
    def keys(self) -> list[str]:
        """Mean keys, then ``AP50(B)/<class>`` and ``AP50-95(B)/<class>`` for every class name, in a fixed order."""
        names = self.names.values()
        return [*self.MEAN_KEYS, *(f"AP50(B)/{n}" for n in names), *(f"AP50-95(B)/{n}" for n in names)]

    def mean_results(self) -> list[float]:
        p, r, map50, map5095 = self.box.mean_results()
        return [p, r, map50, self.box.map75, map5095]

    def class_result(self, i: int) -> tuple[float, ...]:
        """Return precision, recall, AP50, AP75 and AP50-95 of the ``i``-th evaluated class."""
        p, r, ap50, ap5095 = self.box.class_result(i)
        return p, r, ap50, float(self.box.all_ap[i, 5]), ap5095

    @property
    def results_dict(self) -> dict[str, float]:
        """Return every figure of :attr:`keys` plus ``fitness`` (Ultralytics' mAP50-95 weighting, unchanged)."""
        means = dict(zip(self.MEAN_KEYS, (float(x) for x in self.mean_results()), strict=True))
        return {**means, **class_ap(self.box, self.names), "fitness": float(self.fitness)}


class SmartCashValidator(DetectionValidator):
    """Detection validator over :class:`SmartCashDataset`, with the :class:`SmartCashMetrics` table."""

    def __init__(self, dataloader=None, save_dir=None, args=None, _callbacks=None):
        super().__init__(dataloader, save_dir, args, _callbacks)
        self.metrics = SmartCashMetrics()

    def build_dataset(self, img_path: str, mode: str = "val", batch: int | None = None):
        """Build a :class:`SmartCashDataset` for standalone ``val``."""
        return build_smartcash_dataset(self.args, img_path, batch, self.data, mode=mode, stride=self.stride)

    def get_desc(self) -> str:
        return ("%22s" + "%11s" * 7) % ("Class", "Images", "Instances", "Box(P", "R", "mAP50", "mAP75", "mAP50-95)")

    def print_results(self) -> None:
        """Print the 'all' row and, for a final validation, one row per class with AP50, AP75 and AP50-95."""
        pf = "%22s" + "%11i" * 2 + "%11.3g" * len(SmartCashMetrics.MEAN_KEYS)
        nt = self.metrics.nt_per_class
        LOGGER.info(pf % ("all", self.seen, nt.sum(), *self.metrics.mean_results()))
        if nt.sum() == 0:
            LOGGER.warning(f"no labels found in {self.args.task} set, cannot compute metrics without labels")
        if self.args.verbose and not self.training and self.nc > 1:
            for i, c in enumerate(self.metrics.ap_class_index):
                LOGGER.info(pf % (self.names[c], self.metrics.nt_per_image[c], nt[c], *self.metrics.class_result(i)))
