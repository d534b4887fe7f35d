"""N-MNIST (neuromorphic MNIST): event files -> time bins -> conv front end -> CfC/LSTM core."""
