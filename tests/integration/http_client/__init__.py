"""The secure HTTP client (``clients.http`` and what it puts together), through the User
Service client, against a real server on 127.0.0.1: one module per subject."""
