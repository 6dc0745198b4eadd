"""The history browser: static pages at ``/ui`` over the service's read routes.

``mount_ui(app)`` adds the pages (and ``/ui/session``, which tells the pages
whether the caller may write) to a FastAPI app made by
``statelog.service.create_app``; ``create_read_only_app(db)`` makes the app
behind ``statelog ui --db FILE``: the service's GET routes for apps and their
history over a log opened read-only, nothing else. The pages are plain ES
modules and CSS in ``static/``; they fetch only this server's ``/v1`` API.
See docs/ui.md.
"""

from ._mount import STATIC_DIR, mount_ui
from ._read_only import ReadOnlyService, create_read_only_app

__all__ = ["STATIC_DIR", "ReadOnlyService", "create_read_only_app", "mount_ui"]
