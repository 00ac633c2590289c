"""Model transformations: post-training quantization (the quantize package)."""
