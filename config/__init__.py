"""Settings and logging: read once at start-up, passed everywhere else."""

from config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
