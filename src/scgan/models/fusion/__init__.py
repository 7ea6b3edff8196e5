"""The fusion (kind fusion): the PatchCore detector and the SCGAN + head in one model, their scores and maps fused."""
