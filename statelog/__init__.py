"""statelog: an event-sourced, async-first state engine on an append-only log.

The libraries live in ``eventstore`` (the log), ``engine`` (applications) and
``projections`` (read models); this package is the face: the CLI and service.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
