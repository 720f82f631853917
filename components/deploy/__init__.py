"""The deploy component (component.py); see README.md."""

from components.deploy.component import deploy

__all__ = ["deploy"]
