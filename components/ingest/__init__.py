"""The ingest component (component.py); see README.md."""

from components.ingest.component import ingest

__all__ = ["ingest"]
