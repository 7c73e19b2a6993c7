"""Real backbone (packaged all-MiniLM-L6-v2) on real data from ../shared/data. Minutes on CPU:
run with PTV2_SLOW=1 ./scripts/test.sh (or pytest -m slow)."""
from pathlib import Path

import pytest

from helpers import train_task
from ptv2.config import load_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cfg():
    c = load_config(ROOT / "params.yaml", ["tasks.sst2.max_train_examples=600", "train.epochs.ptv2=2",
                                           "train.val_max=200"])
    if not Path(c.data_root, "SST-2/train.tsv").is_file():
        pytest.skip(f"real data not found under {c.data_root}")
    return c


def test_ptv2_learns_sst2_with_real_backbone(cfg, tmp_path):
    run = train_task(cfg, "sst2", tmp_path / "sst2")
    assert run.trainable / run.total < 0.01  # ≤ 1% trainable
    assert run.metrics["dev"]["sst2"]["accuracy"] > 65.0  # majority class is 50.9%


def test_real_backbone_onnx_parity(cfg, tmp_path):
    from ptv2.training.build import load_model
    from ptv2.export.onnx_export import parity, write_bundle
    from ptv2.serving.bundle import Bundle

    c = load_config(ROOT / "params.yaml", ["tasks.cb.epochs.ptv2=1"])
    train_task(c, "cb", tmp_path / "cb", report_splits=())
    model, tok, _ = load_model(tmp_path / "cb/model")
    bundle = write_bundle({"cb": model}, tok, tmp_path / "bundle", int8=False)
    r = parity(model, "cb", Bundle(bundle), batch_sizes=(1, 8), lengths=(1, 40, None))
    assert r["max_abs_diff"] <= 1e-4, r
