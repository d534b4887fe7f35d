"""Scoring: plan, step, explain and store observations (with their alarms and a request's
admissions), and the one replay of stored rows through a model (rebuild.py)."""
