"""Scoring images with a fitted model, never importing Lightning: the ``Detector`` (test, predict, serve)."""
