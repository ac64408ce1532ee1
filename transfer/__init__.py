"""Shared transfer libraries: storage backends and their registry, chunk planning, expansion, journal, part files, path safety."""
