"""segmentflow.activities: activity classes holding the engine; each method calls one service."""

from segmentflow.activities.membership import MembershipActivities
from segmentflow.activities.messages import MessageActivities
from segmentflow.activities.sequences import SequenceActivities

__all__ = ["MembershipActivities", "MessageActivities", "SequenceActivities"]
