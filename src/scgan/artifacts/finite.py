"""No model with values that are not numbers is saved or loaded: it would score nan and compare nothing with its
threshold."""
from __future__ import annotations

import torch
from torch import nn

from scgan.calibration.stats import Calibration


class NonFiniteModelError(RuntimeError):
    """The weights or the calibration hold NaN or infinite values; nothing was saved."""


def nonfinite_cause(calibration: Calibration | None, parts: dict[str, nn.Module]) -> str | None:
    """What is not finite ("generator weight encoder1.0.weight is nan", "calibration l_con.max is inf"), or None.

    ``parts``: a model's stored parts by name (a kind's ``build_parts``).
    """
    for net_name, net in parts.items():
        for name, t in [*net.named_parameters(), *net.named_buffers()]:
            if t.is_floating_point() and not torch.isfinite(t).all():
                bad = t[~torch.isfinite(t)].flatten()[0].item()
                return f"{net_name} weight {name} is {bad}"
    bad = calibration.nonfinite() if calibration is not None else None
    return None if bad is None else f"calibration {bad}"
