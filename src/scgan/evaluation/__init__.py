"""Metrics (image and pixel AUROC, AUPRO, F1-max) and the summary of a test set's scores."""
