"""segmentflow: contact segments for Temporal, with LaunchDarkly's rule model and precomputed memberships."""

__version__ = "0.1.0"
