"""The train component (component.py); see README.md."""

from components.train.component import train

__all__ = ["train"]
