"""Shared code for the pixel-DQN course: the notebooks import their building blocks from here."""

__version__ = "0.1.0"
