"""Streamlit alarm dashboard for the sepsis monitoring service (reads and acts through its API)."""
