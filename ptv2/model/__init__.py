"""Models: the frozen backbone, deep prompts (``prompts``), the one place that knows transformers'
cache/attention internals (``inject``), heads, the baselines' prompts, and ``PromptedModel`` built from a
typed ``ModelSpec``. Imports torch and transformers only (peft lazily for LoRA): no I/O, no printing."""
