"""edge-agent: a fleet of Pis that agree on which origins are up."""

__version__ = "0.1.0"
