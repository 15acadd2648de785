#!/usr/bin/env python3
"""Produces Avro records with Confluent's own client and serializer.

An independent producer for Ordo's tests: confluent-kafka's AvroSerializer
registers the writer schemas through the Schema Registry API (auto.register)
and frames each record as Confluent's serializers do.

Input, one JSON object per line on stdin:
  {"writer": 1|2|3, "key": "stream", "partition": 0, "value": {...}}
where "value" holds the record in the JSON shape Ordo lands (decimals as
strings, timestamps and dates in ISO 8601, UUIDs as text); it is converted
to Python values per the writer schema's logical types before serializing.
"""

import argparse
import datetime
import decimal
import json
import sys
import uuid

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer


def to_python(schema, value):
    """Converts a JSON value into what fastavro expects for `schema`."""
    if isinstance(schema, list):
        if value is None:
            return None
        branch = next(s for s in schema if s != "null")
        return to_python(branch, value)
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        kind = schema.get("type")
        if logical == "decimal":
            return decimal.Decimal(value)
        if logical in ("timestamp-millis", "timestamp-micros"):
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if logical == "date":
            return datetime.date.fromisoformat(value)
        if logical == "uuid":
            return uuid.UUID(value)
        if kind == "record":
            return {f["name"]: to_python(f["type"], value[f["name"]])
                    for f in schema["fields"] if f["name"] in value}
        if isinstance(kind, (dict, list)):
            return to_python(kind, value)
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--schema", action="append", required=True,
                        help="writer schema files, v1 first")
    args = parser.parse_args()

    registry = SchemaRegistryClient({"url": args.registry})
    texts = [open(path).read() for path in args.schema]
    schemas = [json.loads(t) for t in texts]
    # Producers were deployed v1 first, then v2, then v3: register in that order
    # (the subject's BACKWARD compatibility refuses v1 after v3).
    subject = f"{args.topic}-value"
    for text in texts:
        registry.register_schema(subject, Schema(text, "AVRO"))
    serializers = [AvroSerializer(registry, t) for t in texts]
    keys = StringSerializer("utf_8")
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True})
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(str(err))

    count = 0
    for line in sys.stdin:
        rec = json.loads(line)
        writer = rec["writer"] - 1
        ctx = SerializationContext(args.topic, MessageField.VALUE)
        value = serializers[writer](to_python(schemas[writer], rec["value"]), ctx)
        producer.produce(args.topic, partition=rec["partition"],
                         key=keys(rec["key"], SerializationContext(args.topic, MessageField.KEY)),
                         value=value, on_delivery=delivered)
        producer.poll(0)
        count += 1
    remaining = producer.flush(30)
    if failures or remaining:
        print(f"delivery failed: {failures[:3]} ({remaining} undelivered)", file=sys.stderr)
        return 1
    print(f"produced {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
