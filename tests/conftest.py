"""Fast fixtures: a tiny random BERT (2 layers, hidden 32, 4 heads) and a word-level tokenizer
built in the test, plus small task files written to a temp folder. No network."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

for k, v in {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1",
             "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(k, v)

# `import dvc` sets up DVC's log handlers on the sys.stdout/stderr of that moment (dvc.logger.setup). Imported first
# inside a capsys test, they wrote to its closed capture in every later in-process `dvc repro` of the worker
# ("ValueError: I/O operation on closed file"; which test failed depended on xdist's order, session 27). Imported
# here, they hold the session's capture, open throughout.
import dvc  # noqa: E402,F401

WORDS = ("good great fine nice bad awful poor sad the a movie film plot is was very not and but it "
         "cat dog sat on mat john paris lives in works for acme yes no maybe because so what cause "
         "effect happened man woman rain wet sun dry").split()


def make_tiny_backbone_dir(root: Path, seed: int = 0, layers: int = 2) -> Path:
    """Save a random-init BertModel + tokenizer to ``root`` so load_backbone(root) works."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(root)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_backbone_dir(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture()
def tiny(tiny_dir: Path):
    from ptv2.model.backbone import load_backbone

    return load_backbone(str(tiny_dir))


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A temp folder holding one small file per task type/format (``helpers.write_all_formats``)."""
    from helpers import write_all_formats

    write_all_formats(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture()
def tls_health_server(tmp_path):
    """An https server with a self-signed certificate whose /health answers 200: (its URI, the certificate)."""
    import http.server
    import shutil
    import ssl
    import subprocess
    import threading

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
