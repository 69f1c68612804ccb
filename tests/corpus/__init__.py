"""A "bring your own model" corpus: models this project did not write, built from packages (see models.py)."""
