"""COCO box mAP of a detector's predictions, with pycocotools (the maintained reference evaluator).

CAFR / FRN report COCO mAP@[.5:.95] (DSEC) and mAP@.5 (PKU-DDD17-Car); both come from one
``COCOeval`` run here, so our figures mean what theirs mean (101-point interpolated precision, up to
100 detections per image, every area). No home-made AP.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["EvaluationError", "coco_evaluate", "detections_to_coco"]


class EvaluationError(ValueError):
    """Ground truth or detections the evaluator cannot score (the message says which and why)."""


def detections_to_coco(
    image_ids: Iterable[int], predictions: Iterable[dict[str, torch.Tensor]]
) -> list[dict[str, Any]]:
    """torchvision-style predictions (``boxes`` xyxy, ``scores``, 0-based ``labels``) as COCO result rows
    (``bbox`` xywh, ``category_id`` = label)."""
    rows = []
    for image_id, pred in zip(image_ids, predictions, strict=True):
        boxes = pred["boxes"].detach().float().cpu()
        if boxes.numel() and (boxes.ndim != 2 or boxes.shape[1] != 4):
            raise EvaluationError(
                f"image {image_id}: boxes of shape {tuple(boxes.shape)}, expected (K, 4) xyxy"
            )
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1) if boxes.numel() else boxes
        for box, score, label in zip(
            xywh.tolist(), pred["scores"].tolist(), pred["labels"].tolist(), strict=True
        ):
            rows.append(
                {"image_id": int(image_id), "category_id": int(label), "bbox": box, "score": float(score)}
            )
    return rows


def coco_evaluate(
    ground_truth: dict[str, Any], detections: Sequence[dict[str, Any]], class_names: Sequence[str] = ()
) -> dict[str, Any]:
    """``mAP`` (AP@[.5:.95]), ``mAP50``, ``mAP75`` and per-class AP (0..1) of COCO result rows.

    Args:
        ground_truth: a COCO-format dict (``images``, ``annotations`` with xywh ``bbox``, ``categories``),
            as the data sets' ``coco_ground_truth()`` return.
        detections: COCO result rows (:func:`detections_to_coco`); an empty list scores 0.
        class_names: names for the per-class figures (default: the categories' names).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    for key in ("images", "annotations", "categories"):
        if key not in ground_truth:
            raise EvaluationError(f"ground truth has no {key!r} list: give a COCO-format dict")
    if not ground_truth["images"]:
        raise EvaluationError("ground truth holds no images: nothing to evaluate")
    known = {img["id"] for img in ground_truth["images"]}
    stray = sorted({d["image_id"] for d in detections} - known)
    if stray:
        raise EvaluationError(f"detections name image ids {stray[:5]} that the ground truth does not hold")
    categories = {c["id"]: c.get("name", str(c["id"])) for c in ground_truth["categories"]}
    names = list(class_names) or [categories[k] for k in sorted(categories)]
    result: dict[str, Any] = {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0, "per_class": dict.fromkeys(names, 0.0)}
    if not detections or not ground_truth["annotations"]:
        return result
    gt = copy.deepcopy(ground_truth)
    gt.setdefault("info", {})  # pycocotools' loadRes copies it
    for ann in gt["annotations"]:
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and tables
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(list(detections)), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    result.update(mAP=float(stats[0]), mAP50=float(stats[1]), mAP75=float(stats[2]))
    precision = evaluator.eval["precision"]  # [iou, recall, class, area, max_dets]
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        name = (
            names[sorted(categories).index(cat_id)] if len(names) == len(categories) else categories[cat_id]
        )
        result["per_class"][name] = float(np.mean(p[p > -1])) if (p > -1).any() else 0.0
    return result
