"""IAM handwritten lines: ResNet-style front end -> column sequence -> CfC/LSTM -> CTC."""
