"""PostgreSQL, the system of record: tables, migrations, and the only SQL in the code base."""
