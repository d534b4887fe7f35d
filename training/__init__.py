"""Training and evaluation of CfC and LSTM sequence models (sepsis, N-MNIST, QuickDraw, IAM)."""
