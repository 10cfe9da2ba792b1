"""`sdgate bench`: engine vs HTTP, cold start, concurrency, batching, encoding and the GPU path."""
