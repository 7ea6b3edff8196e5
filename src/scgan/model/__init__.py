"""The SCGAN model in plain torch (no Lightning): layers, networks, losses, the anomaly head
(``head``), head-less anomaly maps (``maps``) and the scorer."""
