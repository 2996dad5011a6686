"""Steps that run the quantized model after planning (bias tuning; BN update later)."""
