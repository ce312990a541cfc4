"""Generation: logit filters, constraints, decoding loops, export and the generate/infill pipeline."""
