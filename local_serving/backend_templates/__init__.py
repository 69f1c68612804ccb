"""model.py files for Triton's python backend, copied into the generated serving repository."""
