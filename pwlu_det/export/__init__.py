"""pwlu_det.export."""
