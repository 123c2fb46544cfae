"""segmentflow.activities: filled by the Temporal layer."""
