"""The validate component (component.py); see README.md."""

from components.validate.component import validate

__all__ = ["validate"]
