"""The model's lifecycle: the one active-model holder and its record, model switches, shadow models."""
