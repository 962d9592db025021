"""Screens pushed over the labeling screen, one per module."""

from __future__ import annotations
