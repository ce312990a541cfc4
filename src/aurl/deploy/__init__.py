"""Deployment formats: ONNX graphs (fp32 or INT8) that ``aurl generate/evaluate/serve`` run."""
