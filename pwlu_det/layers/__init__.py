"""pwlu_det.layers."""
