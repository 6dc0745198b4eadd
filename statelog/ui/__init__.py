"""The history browser: static pages at ``/ui`` over the service's read routes.

``mount_ui(app)`` adds the pages (and ``/ui/session``, which tells the pages
whether the caller may write) to a FastAPI app made by
``statelog.service.create_app``; ``create_read_only_app(db)`` makes the app
behind ``statelog ui --db FILE``: the service's GET routes for apps and their
history over a log opened read-only, nothing else. The pages are plain ES
modules and CSS in ``static/``; they fetch only this server's ``/v1`` API.
See docs/ui.md.

``statelog.service`` may import ``mount_ui`` from here at its top: this module
loads the service (for ``create_read_only_app``) only when that is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._mount import STATIC_DIR, mount_ui

if TYPE_CHECKING:
    from ._read_only import ReadOnlyService, create_read_only_app

__all__ = ["STATIC_DIR", "ReadOnlyService", "create_read_only_app", "mount_ui"]


def __getattr__(name: str) -> Any:
    if name in ("ReadOnlyService", "create_read_only_app"):
        from . import _read_only

        return getattr(_read_only, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
