"""Task data: ``tasks`` turns a TaskSpec from params.yaml into normalized ``datasets.Dataset`` splits
(val carved from train), ``collate`` tokenizes once and pads per batch with length grouping, ``mixture``
plans multi-task epochs. Imports config and errors, never the model or training code."""
