"""Catalogue: one interface, an embedded SQLite backend and a MongoDB backend."""
