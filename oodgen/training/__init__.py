"""Training: the jitted, resumable loop (`loop`), objectives, orbax checkpoints, ensembles, SWAG, the recorded
held-out split, and restoring trained models."""
