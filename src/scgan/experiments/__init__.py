"""Reproducing the paper: benchmark tables and ablation studies over categories x seeds."""
