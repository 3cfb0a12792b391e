"""SmartCashMetrics: mAP75 and per-class AP are Ultralytics' own figures, exposed under stable keys."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smartcash_ultra.callbacks.epoch_record import per_class_ap
from smartcash_ultra.engine.validator import SmartCashMetrics

NAMES = {0: "001", 1: "002", 2: "l3_sign"}


def metrics_with_known_answers() -> SmartCashMetrics:
    """Class 001: two exact hits; class 002: one hit good up to IoU 0.70 only; l3_sign: no instance at all."""
    m = SmartCashMetrics(names=NAMES)
    tp = np.array([[True] * 10, [True] * 10, [True] * 5 + [False] * 5])  # IoU thresholds 0.50, 0.55, ..., 0.95
    m.update_stats(
        {
            "tp": tp,
            "conf": np.array([0.9, 0.8, 0.7]),
            "pred_cls": np.array([0, 0, 1]),
            "target_cls": np.array([0, 0, 1]),
            "target_img": np.array([0, 1]),
            "im_name": "pre_rp_001000_x.npy",
        }
    )
    m.process()
    return m


def test_map75_sits_between_map50_and_map50_95_and_matches_ultralytics():
    m = metrics_with_known_answers()
    assert m.keys[:5] == [
        "metrics/precision(B)",
        "metrics/recall(B)",
        "metrics/mAP50(B)",
        "metrics/mAP75(B)",
        "metrics/mAP50-95(B)",
    ]
    r = m.results_dict
    assert r["metrics/mAP75(B)"] == pytest.approx(m.box.map75)
    assert r["metrics/mAP50(B)"] == pytest.approx(m.box.map50) == pytest.approx(0.995)
    assert r["metrics/mAP75(B)"] == pytest.approx((0.995 + 0.0) / 2)  # 002's only hit fails IoU 0.75
    assert r["metrics/mAP50-95(B)"] == pytest.approx(m.box.map)
    assert r["fitness"] == pytest.approx(m.box.fitness())  # Ultralytics' fitness, unchanged


def test_per_class_ap_for_every_class_with_nan_for_absent_ones():
    r = metrics_with_known_answers().results_dict
    assert r["AP50(B)/001"] == pytest.approx(0.995) and r["AP50-95(B)/001"] == pytest.approx(0.995)
    assert r["AP50(B)/002"] == pytest.approx(0.995) and r["AP50-95(B)/002"] == pytest.approx(0.995 / 2)
    assert math.isnan(r["AP50(B)/l3_sign"]) and math.isnan(r["AP50-95(B)/l3_sign"])
    assert list(r) == [*metrics_with_known_answers().keys, "fitness"]  # same order as results.csv's header


def test_per_class_ap_follows_class_ids_not_the_order_of_names():
    m = metrics_with_known_answers()
    m.names = {1: "002", 2: "l3_sign", 0: "001"}  # a data YAML may list names in any order
    r = m.results_dict
    assert r["AP50-95(B)/002"] == pytest.approx(0.995 / 2) and r["AP50-95(B)/001"] == pytest.approx(0.995)
    assert list(r) == [*m.keys, "fitness"]


def test_metric_files_take_the_validators_per_class_ap_from_a_stock_validator():
    m = metrics_with_known_answers()
    per_class = {k: v for k, v in m.results_dict.items() if k.startswith("AP")}
    stock = per_class_ap(m, NAMES)  # what metrics.csv records when Ultralytics' own validator ran
    assert list(stock) == list(per_class)
    np.testing.assert_array_equal(list(stock.values()), list(per_class.values()))  # NaN for l3_sign in both
    assert per_class_ap(SmartCashMetrics(names=NAMES), NAMES) == {}  # nothing before a validation


def test_class_rows_carry_ap75():
    m = metrics_with_known_answers()
    p, r, ap50, ap75, ap = m.class_result(1)
    assert (ap50, ap75) == (pytest.approx(0.995), pytest.approx(0.0))
    assert len(m.mean_results()) == 5


def test_per_class_keys_never_reach_ultralytics_plot_panels():
    keys = SmartCashMetrics(names=NAMES).keys
    assert [k for k in keys if "metric" in k or "loss" in k] == keys[:5]  # plot_results picks columns by name
