"""One thin module per DVC stage (``python -m ptv2.stages.<name>``): parse, call the library, write outputs."""
