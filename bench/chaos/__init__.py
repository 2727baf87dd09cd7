"""The chaos run (``make chaos``): exactly-once under worker, broker, database and
User Service faults, checked against a model of what should have happened."""
