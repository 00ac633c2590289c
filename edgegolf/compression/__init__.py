"""Model transformations: post-training quantization (quantize.py)."""
