"""The paper's SCGAN in plain torch (no Lightning): MS-CAM, networks, losses, the learned head, head-less maps,
the scorer."""
