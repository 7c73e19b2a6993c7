"""Typed, validated configuration: the only reader of ``params.yaml``.

``schema`` holds one frozen dataclass per section (no defaults: params.yaml is the one source of values;
``deploy`` the sections that run and ship models: tracking, flows, export, serving),
``loader`` reads the file and ``--set`` overrides and builds the dataclasses, rejecting unknown, missing and
duplicate keys, YAML errors, wrong types and impossible values with one line naming the key and the fix.
"""
from ptv2.config.loader import (apply_override, comparison_config, config_from_dict, file_data_root, load_config,
                                params_folder, read_yaml)
from ptv2.config.deploy import ExportConfig, FlowsConfig, ServingConfig, TrackingConfig
from ptv2.config.schema import (METRICS, SPLITS, TEMPLATE_FIELD, AdaptConfig, BackboneConfig, CompareConfig, Config,
                                Method, PretrainConfig, PromptConfig, RunConfig, TaskSpec, TaskType, TrainConfig)

__all__ = ["METRICS", "SPLITS", "TEMPLATE_FIELD", "AdaptConfig", "BackboneConfig", "CompareConfig", "Config",
           "ExportConfig", "FlowsConfig", "Method", "PretrainConfig", "PromptConfig", "RunConfig", "ServingConfig",
           "TaskSpec", "TaskType", "TrackingConfig", "TrainConfig", "apply_override", "comparison_config",
           "config_from_dict", "file_data_root", "load_config", "params_folder", "read_yaml"]
