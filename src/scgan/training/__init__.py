"""Lightning training of SCGAN."""
