"""Parses a Prometheus text exposition (standard input) with prometheus_client's own parser and
prints one JSON object per sample: {"family": ..., "type": ..., "name": ..., "labels": {...},
"value": ...}. A malformed exposition makes the parser raise, and this script fail."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(
            json.dumps(
                {
                    "family": family.name,
                    "type": family.type,
                    "name": sample.name,
                    "labels": sample.labels,
                    "value": sample.value,
                }
            )
        )
