#!/usr/bin/env python3
"""Parses a Prometheus text exposition (the file named by argv[1]) with the reference
Python client's parser and prints its families as one JSON object:
{"name": {"type": ..., "help": ..., "samples": [[sample_name, {labels}, value], ...]}}.
A parse error exits non-zero with the parser's message on stderr."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    out = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = {
            "type": family.type,
            "help": family.documentation,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
