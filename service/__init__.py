"""Sepsis monitoring service: a FastAPI app that keeps each patient's CfC model state between
observations and raises alarms when the risk crosses the model card's threshold."""
