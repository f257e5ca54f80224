"""pwlu_det.modeling."""
