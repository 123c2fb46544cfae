"""segmentflow.plugins: filled by the Temporal layer."""
