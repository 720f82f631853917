"""The class_weights component (component.py); see README.md."""

from components.class_weights.component import class_weights

__all__ = ["class_weights"]
