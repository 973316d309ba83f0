"""Training: configuration, the (DDP-ready) loop with checkpoints and monitoring, and CUDA utilities."""
