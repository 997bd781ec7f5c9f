"""Training: data, losses, trainer."""
