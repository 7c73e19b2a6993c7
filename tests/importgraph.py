"""Static import closure of ptv2 modules (every ``import`` statement, function-local ones included)."""
from __future__ import annotations

import ast
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def module_file(name: str, root: Path = PROJECT) -> Path | None:
    """ptv2.a.b -> ptv2/a/b.py or ptv2/a/b/__init__.py (None outside the project)."""
    base = root.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return {n for n in names if n == "ptv2" or n.startswith("ptv2.")}


def closure(module: str, root: Path = PROJECT) -> set[Path]:
    """Files (relative to ``root``) that running ``python -m module`` imports from the project,
    package ``__init__`` files of every parent included."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            f = module_file(".".join(parts[:i]), root)
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(imported(f))
    return {f.relative_to(root) for f in seen}


def covered(path: Path, deps: list[str]) -> bool:
    """Is ``path`` one of ``deps`` or inside a folder of ``deps``?"""
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


def stage_modules(dvc_file: Path) -> dict[str, tuple[str, list[str]]]:
    """stage -> (the module its ``cmd`` runs with ``python -m``, its deps as written)."""
    import re

    import yaml

    out = {}
    for name, st in yaml.safe_load(dvc_file.read_text())["stages"].items():
        body = st.get("do", st)
        m = re.search(r"python -m ([\w.]+)", body["cmd"])
        out[name] = (m.group(1) if m else "", list(body.get("deps", [])))
    return out


def missing_deps(root: Path = PROJECT) -> dict[str, list[str]]:
    """Per stage of every dvc.yaml: project files its module imports that its ``deps`` do not list."""
    gaps = {}
    for dvc_file in (root / "dvc.yaml", *sorted(root.glob("*/dvc.yaml"))):
        for stage, (module, deps) in stage_modules(dvc_file).items():
            missing = sorted(str(f) for f in closure(module, root) if not covered(f, deps))
            if missing or not module:
                gaps[f"{dvc_file.relative_to(root)}:{stage}"] = missing or ["(no python -m command)"]
    return gaps


def unread_keys(root: Path = PROJECT) -> list[str]:
    """Keys of params.yaml (sections and task blocks) that no code outside the loader reads as an
    attribute (``.key``)."""
    import re

    import yaml

    params = yaml.safe_load((root / "params.yaml").read_text())
    code = "\n".join(p.read_text() for d in ("ptv2", "flows") for p in sorted((root / d).rglob("*.py"))
                     if root / "ptv2/config" not in p.parents)
    keys: dict[str, str] = {}
    for section, body in params.items():
        if section == "tasks":
            keys.update({f"tasks.*.{k}": k for spec in body.values() for k in spec})
        elif isinstance(body, dict):
            keys.update({f"{section}.{k}": k for k in body})
        else:
            keys[section] = section
    return sorted(full for full, k in keys.items() if not re.search(rf"\.{re.escape(k)}\b", code))
