"""Entry point of ``python -m model_pipeline``."""

from model_pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
