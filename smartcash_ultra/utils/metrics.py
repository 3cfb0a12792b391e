"""Per-class AP from Ultralytics' detection metrics, under the keys the validator and the metric files share."""

from __future__ import annotations

import math


def class_ap(box, names: dict[int, str]) -> dict[str, float]:
    """Return ``AP50(B)/<class>`` then ``AP50-95(B)/<class>`` for every class of ``names``, in its order.

    ``box`` is Ultralytics' box ``Metric`` (``DetMetrics.box``); a class the split has no instance of gets NaN, so
    every validation gives the same keys.
    """
    ap50, ap = dict.fromkeys(names, math.nan), dict.fromkeys(names, math.nan)
    for i, c in enumerate(box.ap_class_index):
        ap50[int(c)], ap[int(c)] = float(box.ap50[i]), float(box.ap[i])
    return {
        **{f"AP50(B)/{names[c]}": v for c, v in ap50.items()},
        **{f"AP50-95(B)/{names[c]}": v for c, v in ap.items()},
    }
