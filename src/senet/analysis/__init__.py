"""Analysis of networks and runs: cost profiles, excitation statistics, reports."""

from .excite import ExcitationRecorder, ExcitationStats, class_specificity
from .excite_job import excite
from .profile import Profile, Timing, measure, profile
from .report import read_run, report

__all__ = [
    "ExcitationRecorder",
    "ExcitationStats",
    "Profile",
    "Timing",
    "class_specificity",
    "excite",
    "measure",
    "profile",
    "read_run",
    "report",
]
