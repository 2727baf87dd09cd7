"""Scaling proof: one worker under load, a second and a third join its group, two leave.

    python -m bench.scaling [--rate 100] [--users 2000] [--phase-seconds 30] [--json PATH]

SIGTERM stops it cleanly (its workers stopped, its topics and schema dropped); its workers
also get SIGTERM should it die outright.

On its own topics (12 partitions by default), consumer group and Postgres schema, with the
sandbox gateway served in this process, it runs five phases while a producer thread sends
commands at a steady rate the whole time, so every membership change happens under load.
A phase starts once the group has settled after the previous change (see "settled") and
lasts ``--phase-seconds``:

    phase 1: w1            → w2 starts (join)
    phase 2: w1 w2         → w3 starts (join)
    phase 3: w1 w2 w3      → w1 gets SIGTERM (graceful leave; exit code must be 0)
    phase 4: w2 w3         → w2 gets SIGTERM
    phase 5: w3            → the producer stops, everything drains, w3 gets SIGTERM

Workload: commands for ``--users`` users, keyed by userId, round-robin. Per user, a first
card (creates the gateway customer and attaches the card: 2 events), then a repeating
cycle: add a card (gateway attach), make it the default, update its expiry, remove the
previous card (gateway detach). Every command is valid and must be accepted, and the
number of events each one emits is known, so the run checks against an exact model.

Definitions of what is measured, per membership change at instant T (the new worker's
process is started, or SIGTERM is sent), over the window from T to the next change (or
the end of the load). "Visible" means seen by a read_committed consumer: a tailer in this
process reads the results topic live and notes when each result arrives.

- **pause**: for each partition, the longest time without a new visible result, counted
  from the partition's last result before T; the largest over all partitions, with the
  partition and when its gap began (relative to T: a joining worker needs a few seconds
  to start first). In steady state a partition's gap is about the commit interval plus
  the time between its commands (phase 1 gives the baseline, "gap p."). Per partition,
  because a rebalance does not stop every partition at the same moment: each member
  revokes its partitions when it learns of the rebalance (at its next heartbeat), the
  others keep processing meanwhile.
- **all p.**: the same over all partitions together (the whole group stopped).
- **max latency**: the longest produce → visible time of a command produced in the window;
  compare with the p99 of phase 1.
- **settled**: T until the live workers' /metrics (``payment_worker_partitions_assigned``)
  show every partition assigned among them, each with some. The next phase starts then.
- joins: **assigned** — T until the new worker reports a partition; **1st cmd** — T until
  its ``payment_worker_commands_total`` is above 0. Both include the process start-up and
  have the granularity of the statistics interval (0.5 s) and of the polling (0.25 s).
- leaves: **exit** — SIGTERM until the process exited, and its exit code.

Checks (any failure is a violation; the exit code is then 1): every produced command has
exactly one result and it is ``accepted``; every event id named by a result appears
exactly once in the events topic and no other event appears; each user's event sequence
is 1, 2, 3… in partition order with the model's length; nothing was dead-lettered; the
Postgres inbox holds one row per command; every worker stopped with exit code 0 and none
died on its own; every joining worker was given partitions. Timings are printed, never
judged: this machine is shared and noisy.

Modules: ``cli`` (options, JSON), ``run`` (own topics, group and schema; cleanup),
``phases`` (driving the workers through the phases), ``workload`` and ``traffic`` (the
commands, the steady producer, the read_committed tailer), ``members`` and ``timeline``
(the workers' /metrics; when each phase and change happened), ``pauses`` and ``measure``
(gaps, latencies, the figures of each phase and change), ``checks`` (the outcome against
the model), ``report`` and ``render`` (the report and its text).
"""
