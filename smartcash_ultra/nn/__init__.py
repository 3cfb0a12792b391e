"""Model layer: the timm backbone and the SmartCash detection model (Ultralytics' ``nn`` counterpart).

``smartcash_ultra.nn.TimmBackbone`` is also the class path checkpoints written before the package layout pickled.
"""

from smartcash_ultra.nn.backbone import TimmBackbone
from smartcash_ultra.nn.model import SmartCashDetectionModel

__all__ = ["SmartCashDetectionModel", "TimmBackbone"]
