"""Fusion of an RGB and an event feature map of one scale: ``(rgb [N, Cr, H, W], events [N, Ce, H, W])
-> [N, out, H, W]``.

Three fusions, the baselines CAFR / FRN (Cao et al., ECCV 2024, arXiv 2407.12582) compare against:

* ``"add"``: element-wise sum (equal widths), then a 1x1 projection only if the width changes;
* ``"concat"``: channel concatenation then a 1x1 convolution (with bias, no BN, no activation) to
  ``out`` channels. FRN's FPN-fusion baseline feeds the 2C-channel concatenation straight to the FPN,
  whose lateral 1x1 convolution is then the only projection; our 1x1 convolution followed by the
  FPN's lateral 1x1 is again an affine map of the concatenation (of rank <= out), so it keeps the
  FPN at the widths of a single-stream network without adding a non-linearity or a normalisation.
  No BN: FRN trains with batch 1 and every BN frozen, where a fresh BN layer would be either batch
  statistics of one sample or a fixed identity;
* ``"se"``: the "SENet" fusion baseline: the SE block of :mod:`senet.se` recalibrates the
  concatenated Cr + Ce channels, then the same 1x1 projection as ``"concat"``. With
  ``init="identity"`` the SE block starts as the exact identity, so an SE fusion loaded with a
  trained concat fusion's weights computes exactly its output at first.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from ..se import SEBlock

__all__ = ["FUSIONS", "SE_OPTIONS", "AddFusion", "ConcatFusion", "SEFusion", "make_fusion"]

FUSIONS = ("add", "concat", "se")
SE_OPTIONS = ("reduction", "squeeze", "excitation", "bias", "divisor", "init")


def _unknown_choice(what: str, value: Any, choices: tuple[str, ...]) -> ValueError:
    """The error for a ``what`` (fusion, head) not in ``choices``, with the closest name as a hint."""
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.4)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {what} {value!r}: choose one of {choices}.{hint}")


class _PairFusion(nn.Module):
    """Shared input checks: two maps of the same batch size and spatial size, of the declared widths."""

    def __init__(self, rgb_channels: int, event_channels: int, out_channels: int) -> None:
        super().__init__()
        widths = {
            "rgb_channels": rgb_channels,
            "event_channels": event_channels,
            "out_channels": out_channels,
        }
        for key, value in widths.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{type(self).__name__}: {key}={value!r} must be a whole number >= 1")
        self.rgb_channels = rgb_channels
        self.event_channels = event_channels
        self.out_channels = out_channels

    def check(self, rgb: torch.Tensor, events: torch.Tensor) -> None:
        """Refuse inputs that are not (N, Cr, H, W) and (N, Ce, H, W), naming the mismatch."""
        name = type(self).__name__
        for what, x, c in (("rgb", rgb, self.rgb_channels), ("events", events, self.event_channels)):
            if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != c:
                shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(
                    f"{name}: the {what} map must be (N, {c}, H, W), got {shape}; build the fusion with "
                    "the channel counts of the stage it fuses"
                )
        if rgb.shape[0] != events.shape[0] or rgb.shape[2:] != events.shape[2:]:
            raise ValueError(
                f"{name}: rgb {list(rgb.shape)} and events {list(events.shape)} differ in batch or spatial "
                "size; feed both streams inputs of the same height and width"
            )

    def extra_repr(self) -> str:
        return f"rgb={self.rgb_channels}, events={self.event_channels}, out={self.out_channels}"


class AddFusion(_PairFusion):
    """``rgb + events`` (equal widths), then a 1x1 convolution if ``out_channels`` differs.

    With ``out_channels`` equal to the input width it has no parameters.
    """

    def __init__(self, rgb_channels: int, event_channels: int, out_channels: int) -> None:
        super().__init__(rgb_channels, event_channels, out_channels)
        if rgb_channels != event_channels:
            raise ValueError(
                f"AddFusion sums the maps, so it needs equal widths, got rgb_channels={rgb_channels} and "
                f"event_channels={event_channels}; use fusion 'concat' or 'se' for unequal widths"
            )
        self.proj = (
            nn.Identity() if out_channels == rgb_channels else nn.Conv2d(rgb_channels, out_channels, 1)
        )

    def forward(self, rgb: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        self.check(rgb, events)
        return self.proj(rgb + events)


class ConcatFusion(_PairFusion):
    """``proj(cat(rgb, events))``: concatenation then a 1x1 convolution with bias (see the module doc)."""

    def __init__(self, rgb_channels: int, event_channels: int, out_channels: int) -> None:
        super().__init__(rgb_channels, event_channels, out_channels)
        self.proj = nn.Conv2d(rgb_channels + event_channels, out_channels, 1)

    def forward(self, rgb: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        self.check(rgb, events)
        return self.proj(torch.cat([rgb, events], 1))


class SEFusion(_PairFusion):
    """``proj(se(cat(rgb, events)))``: the "SENet" fusion of CAFR / FRN.

    ``se`` is :class:`senet.se.SEBlock` over the ``Cr + Ce`` concatenated channels, built with
    ``reduction`` and ``se_options``, its other knobs (:data:`SE_OPTIONS`: ``squeeze``, ``excitation``,
    ``bias``, ``divisor``, ``init``, with SEBlock's defaults); ``proj`` is laid out as
    :class:`ConcatFusion`'s, so the two share weights.
    """

    def __init__(
        self,
        rgb_channels: int,
        event_channels: int,
        out_channels: int,
        reduction: int = 16,
        **se_options: Any,
    ) -> None:
        super().__init__(rgb_channels, event_channels, out_channels)
        unknown = sorted(set(se_options) - set(SE_OPTIONS))
        if unknown:
            options = ", ".join(SE_OPTIONS)
            raise ValueError(f"SE fusion does not take {', '.join(unknown)}; its options are {options}")
        channels = rgb_channels + event_channels
        self.se = SEBlock(channels, reduction, **se_options)
        self.proj = nn.Conv2d(channels, out_channels, 1)

    def forward(self, rgb: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        self.check(rgb, events)
        return self.proj(self.se(torch.cat([rgb, events], 1)))


_CLASSES: dict[str, type[_PairFusion]] = {"add": AddFusion, "concat": ConcatFusion, "se": SEFusion}


def make_fusion(
    name: str, rgb_channels: int, event_channels: int, out_channels: int, **se_kwargs: Any
) -> nn.Module:
    """The fusion ``name`` (one of :data:`FUSIONS`); ``se_kwargs`` (:data:`SE_OPTIONS`) for ``"se"`` only."""
    if name not in _CLASSES:
        raise _unknown_choice("fusion", name, FUSIONS)
    if name != "se" and se_kwargs:
        raise ValueError(
            f"fusion {name!r} takes no options, got {', '.join(sorted(se_kwargs))}; "
            "they are SE options: use fusion 'se' or drop them"
        )
    return _CLASSES[name](rgb_channels, event_channels, out_channels, **se_kwargs)
