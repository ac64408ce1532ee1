"""domas: data management for a synchrotron light source."""

__version__ = "0.1.0"
