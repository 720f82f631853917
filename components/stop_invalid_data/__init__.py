"""The stop_invalid_data component (component.py); see README.md."""

from components.stop_invalid_data.component import stop_invalid_data

__all__ = ["stop_invalid_data"]
