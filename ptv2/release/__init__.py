"""The release evidence chain, after export: ``gate`` decides on evidence (a challenger against the trivial
and frozen baselines and the champion, by paired tests on dev), ``promotion`` registers one task's bundle
and moves its alias, ``publish`` builds the multi-task model from every task's champion. It reaches MLflow
only through ``ptv2.tracking`` and reads no stage output by a path of its own: stages pass the paths."""
