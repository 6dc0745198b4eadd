"""statelog: an event-sourced, async-first state engine on an append-only log.

The everyday face is here::

    from statelog import ApplicationBuilder, State, action, default, expr, when

The rest lives in subpackages: ``statelog.eventstore`` (the log, its stores and
snapshots; ``statelog.eventstore.sqlite`` and ``statelog.eventstore.kafka`` per
backend), ``statelog.engine`` (applications) and ``statelog.projections`` (read
models). Every error statelog raises is a ``StatelogError``; all of them are
re-exported here.
"""

from statelog.engine import (
    ActionError,
    AppExistsError,
    Application,
    ApplicationBuilder,
    GraphChangedError,
    HookError,
    InputError,
    Secret,
    State,
    StateError,
    TransitionError,
    action,
    default,
    expr,
    wait_for_input,
    when,
)
from statelog.eventstore import (
    CheckpointError,
    ConcurrencyError,
    ConfigError,
    EncodingError,
    EventTooLargeError,
    FencedError,
    IntegrityError,
    InvalidEventError,
    KeyFileError,
    KeyMismatchError,
    SchemaVersionError,
    StatelogError,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    UsageError,
)
from statelog.projections import ProjectionError

__version__ = "0.1.0"

__all__ = [
    "ActionError",
    "AppExistsError",
    "Application",
    "ApplicationBuilder",
    "CheckpointError",
    "ConcurrencyError",
    "ConfigError",
    "EncodingError",
    "EventTooLargeError",
    "FencedError",
    "GraphChangedError",
    "HookError",
    "InputError",
    "IntegrityError",
    "InvalidEventError",
    "KeyFileError",
    "KeyMismatchError",
    "ProjectionError",
    "SchemaVersionError",
    "Secret",
    "State",
    "StateError",
    "StatelogError",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreUnavailableError",
    "TransitionError",
    "UsageError",
    "__version__",
    "action",
    "default",
    "expr",
    "wait_for_input",
    "when",
]
