"""Alarms: the rules (when a risk alarms, suppression, the state machine), their storage, what a
clinician does with an alarm, and each unit's operating point."""
