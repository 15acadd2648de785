#!/usr/bin/env python3
"""Produces records with Confluent's own client, compressed with a codec.

An independent producer for Ordo's tests (librdkafka as Python ships it):
every record of the batch is compressed with --compression (gzip, snappy,
lz4 or zstd).

Input, one JSON object per line on stdin:
  {"partition": 0, "key": "stream", "value": "<the record's value as text>"}
"""

import argparse
import json
import sys

from confluent_kafka import Producer


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--compression", required=True,
                        choices=["gzip", "snappy", "lz4", "zstd"])
    args = parser.parse_args()
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "compression.type": args.compression,
        "linger.ms": 50,
        "enable.idempotence": True,
    })
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(str(err))

    for line in sys.stdin:
        if not line.strip():
            continue
        r = json.loads(line)
        producer.produce(args.topic, key=r["key"], value=r["value"].encode(),
                         partition=r["partition"], on_delivery=delivered)
        producer.poll(0)
    left = producer.flush(60)
    if failures or left:
        sys.exit(f"not delivered: {left} pending, errors {failures[:3]}")


if __name__ == "__main__":
    main()
