"""torch.hub entry points: one per registered senet model.

    model = torch.hub.load("path/to/senet", "se_resnet50", source="local", weights="se_resnet50.pth")
    torch.hub.list("path/to/senet", source="local")

Each entry point is ``senet.create_model(NAME, weights=..., **kwargs)``: random initialisation unless
``weights`` names a file (ours, Cadene, timm, torchvision or converted Caffe); nothing is downloaded.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path
from typing import Any as _Any

dependencies = ["torch", "torchvision", "numpy", "yaml"]

try:
    import senet as _senet
except ImportError:  # a checkout that was not pip-installed: use its src/ folder
    _sys.path.insert(0, str(_Path(__file__).resolve().parent / "src"))
    import senet as _senet


def _entry(name: str) -> _Any:
    def entry(weights: str | None = None, **kwargs: _Any) -> _Any:
        return _senet.create_model(name, weights=weights, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"{name}: senet.create_model({name!r}, weights=None, **kwargs).\n\n"
        "weights: a weights file any layout senet.load_weights understands (random init when None);\n"
        "kwargs: the model's options (num_classes, reduction, ...), as for senet.create_model."
    )
    return entry


for _name in _senet.list_models():
    globals()[_name] = _entry(_name)
