"""One adapter per system. Each exposes the same ``System`` surface (see ``_base``)."""
