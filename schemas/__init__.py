"""The wire: pydantic models of commands, events and results, and the decoder of raw bytes.

These models are the source of truth for the message contracts on every topic.
"""
