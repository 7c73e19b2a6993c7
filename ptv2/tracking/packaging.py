"""How a bundle becomes a registered MLflow model that deploys anywhere: the serving code it imports
(torch-free, as ``code_paths``), its requirements, signature, an input example per task, the model card,
and the serving settings as its model config. ``pyfunc.py`` is the model itself."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ptv2.serving.requests import BUNDLE_ARTIFACT, serving_settings
from ptv2.tracking.store import _mlflow, artifact_bar

# onnxruntime and tokenizers decide a served model's answers (the export checked parity and int8 agreement on these
# versions): pinned, so an environment MLflow builds for it (--env-manager uv / virtualenv) gets them, and MLflow
# warns where another version loads it; the rest only carry arrays and tables
PINNED_REQUIREMENTS = ("onnxruntime", "tokenizers")
FREE_REQUIREMENTS = ("safetensors", "numpy", "pandas")


def pyfunc_requirements() -> list[str]:
    """The served model's pip requirements: ``PINNED_REQUIREMENTS`` at this environment's versions, the rest free."""
    return [f"{p}=={v}" if (v := _installed_version(p)) else p for p in PINNED_REQUIREMENTS] + list(FREE_REQUIREMENTS)


def _installed_version(module: str) -> str | None:
    """The version of the distribution that provides ``module`` here: onnxruntime may come as onnxruntime-gpu (or
    -openvino, -directml) on a GPU host, whose versions follow onnxruntime's; the served model asks for the CPU
    package (it serves on onnxruntime's CPU provider). None if no distribution says it provides it."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    for dist in [module, *packages_distributions().get(module, [])]:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


# what the served model imports from the project (torch-free), copied into the model as its code
SERVING_CODE = ("__init__.py", "errors.py", "files.py", "host.py", "prefix.py", "spans.py", "serving")


def serving_code(dst: Path) -> Path:
    """A ``ptv2`` package holding only what serving imports, under ``dst``: the model's ``code_paths``, so a
    registered version loads where the project is not installed."""
    src = Path(__file__).resolve().parents[1]
    pkg = dst / "ptv2"
    for rel in SERVING_CODE:
        if (src / rel).is_dir():
            shutil.copytree(src / rel, pkg / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            pkg.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, pkg / rel)
    return pkg


def signature():
    """Columns in (``task``, ``text`` required; ``text_pair`` for pair tasks, ``choices`` for multiple choice)
    and out (``label`` / ``score`` / ``choice`` / ``entities`` by task type)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    # choices: a list of strings on multiple-choice rows and nothing on the others of a mixed request, which
    # pandas makes NaN; an Array(string) column refuses NaN, so its type is Any and the bundle checks it
    inputs = Schema([ColSpec("string", "task"), ColSpec("string", "text"),
                     ColSpec("string", "text_pair", required=False), ColSpec(AnyType(), "choices", required=False)])
    outputs = Schema([ColSpec("string", "task"), ColSpec("string", "label", required=False),
                      ColSpec("double", "score", required=False), ColSpec("long", "choice", required=False),
                      ColSpec("string", "entities", required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(bundle_dir: str | Path) -> Any:
    """One row per task the bundle serves, shaped by its type (read from the bundle's task specs)."""
    import pandas as pd

    rows = []
    for spec_file in sorted((Path(bundle_dir) / "tasks").glob("*.json")):
        spec = json.loads(spec_file.read_text())
        row: dict[str, Any] = {"task": spec_file.stem, "text": "A man is playing a guitar."}
        if spec.get("text_b"):
            row["text_pair"] = "Someone plays an instrument."
        if spec.get("type") == "multiple_choice":
            row["choices"] = ["He sings.", "He sleeps."]
        rows.append(row)
    return pd.DataFrame(rows)


def log_bundle_model(root: str | Path, run_id: str, bundle_dir: str | Path, extra: dict[str, str | Path] | None = None,
                     name: str = "pyfunc", serving: Any = None, card: str = "") -> str:
    """Log a bundle as a pyfunc model (models-from-code) into an existing run; returns its model URI.
    The model carries the serving code it imports (``serving_code``), its signature and an input example
    per task; ``card`` (markdown) rides along as ``model_card.md``. ``extra`` artifacts (e.g. the adapter
    folder) ride along for re-scoring; ``serving`` (params' serving section) becomes the model's config:
    request limits and which encoder it serves."""
    mlflow = _mlflow(root)
    code = Path(__file__).with_name("pyfunc.py")
    artifacts = {BUNDLE_ARTIFACT: str(bundle_dir), **{k: str(v) for k, v in (extra or {}).items()}}
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id), artifact_bar():
        if card:
            (Path(tmp) / "model_card.md").write_text(card, encoding="utf-8")  # paths, labels: any script
            artifacts["card"] = str(Path(tmp) / "model_card.md")
        info = mlflow.pyfunc.log_model(name=name, python_model=str(code), artifacts=artifacts,
                                       code_paths=[str(serving_code(Path(tmp) / "code"))],
                                       signature=signature(), input_example=input_example(bundle_dir),
                                       pip_requirements=pyfunc_requirements(),  # explicit: inferring costs ~3 s
                                       model_config=serving_settings(serving))
    return info.model_uri


def model_card(name: str, record: dict[str, Any], data: dict[str, Any], serving: dict[str, Any],
               evidence: dict[str, Any] | None = None) -> str:
    """A registered version's card (markdown): what it is, what it was trained and checked on, how it
    compares with the baselines (``evidence``: the gate's, once decided), how it is served, its limits.
    ``record``: backbone, method, prompt_length, pooling, normalize, max_length, trainable / total params, dev metrics;
    ``data``: task, type, files, train / val rows, the gate's metric, pair encoding."""
    task, m = data["task"], data["metric"]
    dev = record.get("dev", {})
    lines = [f"# {name}", "",
             f"- **Model**: backbone `{record.get('backbone', '?')}`, method `{record.get('method', '?')}`, prompt "
             f"length {record.get('prompt_length', '?')}, pair encoding `{data.get('pair_encoding', '-')}`, "
             f"pooling `{record.get('pooling', '?')}`{' (normalised)' if record.get('normalize') else ''}; "
             f"{record.get('trainable_params', 0):,} of "
             f"{record.get('total_params', 0):,} parameters trained "
             f"({100 * record.get('trainable_params', 0) / max(1, record.get('total_params', 1)):.3f} %).",
             f"- **Data**: task `{task}` ({data['type']}), files {data['files']}; {data['train_rows']} train rows, "
             f"{data['val_rows']} val rows carved from train for selection; dev only reported; test never used.",
             "- **Dev**: " + ", ".join(f"{k} {v:.2f}" for k, v in dev.items()) if dev else "- **Dev**: not recorded",
             f"- **Served**: ONNX encoder in {serving['served']} (int8 agreement with fp32 on dev: "
             f"{serving.get('int8_agreement') or '-'}), onnxruntime, no torch; request limits {serving['limits']}."]
    if evidence:
        base = ", ".join(f"{k} {s:.2f} (p = {p:.4f})" for k, (s, p) in evidence["baselines"].items())
        lines += [f"- **Gate** ({m}, paired permutation test on dev): this version {evidence['challenger']:.2f}; "
                  f"baselines {base}; champion before "
                  + ("none" if evidence.get("champion") is None else
                     f"{evidence['champion']:.2f} (p = {evidence['p_champion']:.4f})")
                  + f"; decision: {'promoted' if evidence['promoted'] else 'not promoted'} ({evidence['reason']})."]
    lines += ["", "## Intended use and limits", "",
              f"Labels texts for `{task}` as defined in the project's params.yaml, in its language and domain. Texts "
              f"longer than {record.get('max_length', '?')} tokens are cut to that length. Scores are the model's "
              "probabilities (or regression outputs), not calibrated beyond dev. Out-of-domain inputs, other "
              "languages and adversarial text were not evaluated."]
    return "\n".join(lines) + "\n"
