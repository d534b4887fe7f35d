"""Quick, Draw! sketches as point sequences (dx, dy, x, y, pen) -> CfC/LSTM core -> 10 classes."""
