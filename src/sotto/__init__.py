"""Sotto: end-to-end encrypted team messaging deployed into your own AWS account."""

__version__ = "0.1.0"
