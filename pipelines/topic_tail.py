"""``payment-worker events|results|dlq tail``: a topic's records as JSON lines.

Read ``read_committed``, so only what the worker committed is shown; from now on, or from
the beginning, until ``--max`` records, ``--timeout`` idle seconds, or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json

from config.settings import Settings
from pipelines.kafka_clients import read_records, topic_reader


def tail_topic(settings: Settings, args: argparse.Namespace) -> int:
    """Print the records of the topic ``args.topic_kind`` names, one JSON line each."""

    topic = {
        "events": settings.topic_events,
        "results": settings.topic_results,
        "dlq": settings.topic_dlq,
    }[args.topic_kind]
    consumer = topic_reader(settings, topic, from_beginning=args.from_beginning)
    try:
        for record in read_records(consumer, idle_timeout=args.timeout, max_records=args.max):
            print(json.dumps(record), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
