"""The generation engine shared by training and evaluation: the fused decoder and its KV allocator,
the rollout backends (HF ``generate``, fused, vLLM) and the vLLM engine with its merged checkpoints."""
