"""Faces on onnxruntime: detection, alignment, embeddings, inswapper swap, restorer paste-back."""
