"""Real Triton and real Prometheus on 127.0.0.1: serve the built model repository, load it, report on it."""
