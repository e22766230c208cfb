"""Inference: resampling to a physical resolution, tile grids, blended sliding windows, ensembles."""
