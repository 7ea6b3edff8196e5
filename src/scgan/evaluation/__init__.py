"""Metrics of scores against labels and masks (image and pixel AUROC, AUPRO, F1-max): arrays in, numbers out."""
