"""tsnctl: Temporal Segment Networks for video action recognition."""

__version__ = "0.1.0"
