"""Where the quantization error comes from: layer-wise errors and the HTML report."""
