"""Patients: admission, outcome and discharge, corrections, a stay's status and its bedside scores."""
