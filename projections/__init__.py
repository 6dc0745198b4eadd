"""Projections: read models folded from the log, live and rebuilt offline, exactly once."""

from ._builtins import (
    BUILTIN_PROJECTIONS,
    AppIndexProjection,
    AuditTrailProjection,
    CurrentStateProjection,
    get_projection,
    register_projection,
)
from ._checkpoint import Checkpoint, Generation, Item
from ._errors import ProjectionError
from ._kafka import KafkaSource
from ._projection import Projection, ProjectionContext, SyncProjectionContext
from ._readmodel import ReadModel
from ._runner import Progress, ProjectionRunner
from ._sources import FileSource, Source, StoreSource, open_source

__all__ = [
    "BUILTIN_PROJECTIONS",
    "AppIndexProjection",
    "AuditTrailProjection",
    "Checkpoint",
    "CurrentStateProjection",
    "FileSource",
    "Generation",
    "Item",
    "KafkaSource",
    "Progress",
    "Projection",
    "ProjectionContext",
    "ProjectionError",
    "ProjectionRunner",
    "ReadModel",
    "Source",
    "StoreSource",
    "SyncProjectionContext",
    "get_projection",
    "open_source",
    "register_projection",
]
