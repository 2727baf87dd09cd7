"""What the worker tells Prometheus: a leaf that imports nothing of the project, so every
layer (clients, state, pipelines) may count into it."""
