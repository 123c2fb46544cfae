"""Pure. Decisions about what happens next (SLA policies, action restrictions, sequence steps): no I/O."""
