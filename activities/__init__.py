"""segmentflow.activities: activity classes holding the engine; each method calls one service."""

from segmentflow.activities.membership import MembershipActivities

__all__ = ["MembershipActivities"]
