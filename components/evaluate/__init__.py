"""The evaluate component (component.py); see README.md."""

from components.evaluate.component import evaluate

__all__ = ["evaluate"]
