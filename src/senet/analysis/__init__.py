"""Analysis of networks and runs: cost profiles, excitation statistics, reports."""

from .profile import Profile, profile

__all__ = ["Profile", "profile"]
