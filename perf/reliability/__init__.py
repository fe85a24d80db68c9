"""Fault and soak testing: the reliability scenarios under load (`scenarios`)."""
