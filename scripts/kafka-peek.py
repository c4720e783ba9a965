#!/usr/bin/env python3
"""Print every message of Kafka topics from the beginning, one per line:
topic, partition, offset, key, value (a tombstone's value shows as
<tombstone>). Exits after 5 s without a new message.

    python3 scripts/kafka-peek.py 127.0.0.1:9092 shop.public.orders [more topics]

Uses confluent-kafka (installed by scripts/install-deps.sh).
"""
import sys

import confluent_kafka as ck

brokers, topics = sys.argv[1], sys.argv[2:]
c = ck.Consumer({"bootstrap.servers": brokers, "group.id": "kafka-peek", "enable.auto.commit": False})
c.assign([ck.TopicPartition(t, p, ck.OFFSET_BEGINNING)
          for t in topics for p in c.list_topics(t, timeout=10).topics[t].partitions])
while (m := c.poll(5)) is not None:
    if m.error():
        sys.exit(f"kafka-peek: {m.error()}")
    key = (m.key() or b"").decode()
    value = m.value().decode() if m.value() is not None else "<tombstone>"
    print(m.topic(), m.partition(), m.offset(), key, value, sep="\t", flush=True)
c.close()
