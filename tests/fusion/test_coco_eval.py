"""The COCO evaluator on boxes whose AP is known by hand (pycocotools' 101-point interpolation)."""

from __future__ import annotations

import pytest
import torch

from senet.fusion.evaluate import EvaluationError, coco_evaluate, detections_to_coco


def _gt(boxes_per_image: list[list[tuple[float, float, float, float, int]]], classes: int = 2) -> dict:
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image):
        images.append({"id": i, "width": 100, "height": 80})
        for x, y, w, h, c in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, h]})
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": f"c{c}"} for c in range(classes)],
    }


def _pred(rows: list[tuple[float, float, float, float, float, int]]) -> dict[str, torch.Tensor]:
    t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
    return {"boxes": t[:, :4], "scores": t[:, 4], "labels": t[:, 5].long()}


def test_perfect_detections_score_one() -> None:
    gt = _gt([[(10, 10, 20, 30, 0)], [(5, 5, 40, 20, 1), (50, 40, 10, 10, 0)]])
    preds = [_pred([(10, 10, 30, 40, 0.9, 0)]), _pred([(5, 5, 45, 25, 0.8, 1), (50, 40, 60, 50, 0.7, 0)])]
    r = coco_evaluate(gt, detections_to_coco([0, 1], preds))
    assert r["mAP"] == pytest.approx(1.0) and r["mAP50"] == pytest.approx(1.0)
    assert r["per_class"] == {"c0": pytest.approx(1.0), "c1": pytest.approx(1.0)}


def test_half_recall_is_51_of_101_points() -> None:
    """Two objects of one class, one found exactly: precision 1 up to recall 0.5, i.e. 51 of the 101
    recall points of COCO's interpolation (0, 0.01, ..., 0.5)."""
    gt = _gt([[(10, 10, 20, 20, 0), (60, 40, 20, 20, 0)]], classes=1)
    r = coco_evaluate(gt, detections_to_coco([0], [_pred([(10, 10, 30, 30, 0.9, 0)])]))
    assert r["mAP50"] == pytest.approx(51 / 101)
    assert r["mAP"] == pytest.approx(51 / 101)


def test_iou_060_box_counts_for_three_of_ten_thresholds() -> None:
    """A box of IoU 0.6 with its object is a hit at IoU 0.50, 0.55 and 0.60 only: mAP = 3/10."""
    gt = _gt([[(0, 0, 50, 20, 0)]], classes=1)
    # same height, width 30 inside 50: IoU = 30 / 50 = 0.6
    r = coco_evaluate(gt, detections_to_coco([0], [_pred([(0, 0, 30, 20, 0.9, 0)])]))
    assert r["mAP50"] == pytest.approx(1.0)
    assert r["mAP75"] == pytest.approx(0.0)
    assert r["mAP"] == pytest.approx(0.3)


def test_wrong_class_and_no_detections_score_zero() -> None:
    gt = _gt([[(10, 10, 20, 20, 0)]])
    wrong = coco_evaluate(gt, detections_to_coco([0], [_pred([(10, 10, 30, 30, 0.9, 1)])]))
    assert wrong["mAP50"] == pytest.approx(0.0)
    assert coco_evaluate(gt, [])["mAP"] == 0.0


def test_bad_inputs_name_the_problem() -> None:
    gt = _gt([[(10, 10, 20, 20, 0)]])
    with pytest.raises(EvaluationError, match="image ids \\[7\\]"):
        coco_evaluate(gt, detections_to_coco([7], [_pred([(10, 10, 30, 30, 0.9, 0)])]))
    with pytest.raises(EvaluationError, match="no 'annotations'"):
        coco_evaluate({"images": [], "categories": []}, [])
    with pytest.raises(EvaluationError, match="expected \\(K, 4\\)"):
        detections_to_coco(
            [0], [{"boxes": torch.zeros(2, 3), "scores": torch.zeros(2), "labels": torch.zeros(2)}]
        )
