"""The syntax of values the pipeline and the program both accept: one definition each.

Model names, bucket names, Prometheus durations and Kubernetes quantities are checked here and nowhere else;
``components`` imports this module (the pipeline is the lower layer and imports nothing of the program).
"""

from __future__ import annotations

import re
from decimal import Decimal

# A model name is a directory, a URL segment (/v2/models/<name>), a Prometheus label value and part of Kubernetes
# object names: the alphabet all of them accept, at most 63 characters (a label value's limit).
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MODEL_NAME_RULE = "a lower-case model name (letters, digits, - and _)"

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
BUCKET_NAME_RULE = "3-63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit"

# Prometheus' duration syntax, which its configuration, rules and flags all take.
DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")
DURATION_RULE = "a Prometheus duration such as 30s, 5m or 1h"
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}

QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
QUANTITY_RULE = "a Kubernetes quantity such as 500m, 2, 512Mi or 8Gi"
_QUANTITY_FACTORS = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def is_bucket_name(name: str) -> bool:
    """An S3 bucket name: the pattern, and no two dots in a row."""
    return bool(BUCKET_NAME.match(name)) and ".." not in name


def duration_seconds(text: str) -> float:
    """A Prometheus duration ("90s", "1h30m") in seconds; ValueError if it is not one."""
    if not DURATION.match(text):
        raise ValueError(f"duration {text!r} is not {DURATION_RULE}")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def quantity_value(text: str) -> float:
    """A Kubernetes quantity ("500m", "8Gi") as a number, for comparisons; ValueError if it is not one."""
    match = QUANTITY.match(text)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    # Exact decimal arithmetic first: as floats, 2300m * 0.001 and 2.3 differ, and a request would "exceed" its
    # own limit written the other way.
    return float(Decimal(match.group(1)) * _QUANTITY_FACTORS[match.group(3) or ""])
