"""Calibration of a trained model on normal images: normalisation, decisions, heat-map scaling, score choice.

``stats`` is numpy only (the ONNX runtime uses it without torch); ``fit`` fits it with a torch model:
``scgan.calibration.fit.calibrate(scorer, normal_loader, cfg)``.
"""
from scgan.calibration.stats import (
                                     SELECTION_PREFERENCE,
                                     Calibration,
                                     ScoreStats,
                                     fit_calibration,
                                     preference_order,
                                     separation_auroc,
                                     separation_margin,
)

__all__ = ["SELECTION_PREFERENCE", "Calibration", "ScoreStats", "fit_calibration", "preference_order",
           "separation_auroc", "separation_margin"]
