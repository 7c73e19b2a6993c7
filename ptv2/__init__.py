"""ptv2: P-Tuning v2 deep prompts on frozen encoders, as a pipeline."""

__version__ = "0.1.0"
