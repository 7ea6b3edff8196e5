"""Calibration of a trained model on normal images: normalisation, decisions, heat-map scaling, score choice.

Numpy only (the ONNX runtime uses it without torch): arrays of scores in, a calibration out. Running a model over
normal images to fit one is orchestration, a layer up: ``scgan.inference.calibrate.calibrate(scorer, loader, cfg)``.
"""
from scgan.calibration.stats import (
                                     Calibration,
                                     ScoreStats,
                                     fit_calibration,
                                     preference_order,
                                     separation_auroc,
                                     separation_margin,
)

__all__ = ["Calibration", "ScoreStats", "fit_calibration", "preference_order",
           "separation_auroc", "separation_margin"]
