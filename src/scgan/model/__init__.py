"""The SCGAN model in plain torch (no Lightning): layers, networks, losses and the scorer."""
