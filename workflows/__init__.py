"""segmentflow.workflows: filled by the Temporal layer."""
