"""Stand-ins for outside services, served over real HTTP for local runs and tests."""
