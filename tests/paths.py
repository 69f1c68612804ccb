"""The repository root, computed once: test modules sit at different depths under tests/, so none computes it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
