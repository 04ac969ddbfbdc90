"""Multi-process training with torchrun (gloo, 2 CPU processes): faithful global-batch losses."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402

from pipnet.train.config import dump_config  # noqa: E402

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


def _torchrun(args, cwd, timeout=240):
    cmd = [TORCHRUN, "--nproc_per_node=2", "--master_port=0", "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:0"]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_two_process_losses_and_gradients_equal_one_process(tmp_path):
    done = _torchrun([str(Path(__file__).parent / "ddp_worker.py"), str(tmp_path)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single_model = ddp_worker.model()
    x1, x2, y = ddp_worker.global_batch()
    single = ddp_worker.step(single_model, x1, x2, y, ddp_worker.init_distributed("cpu"))
    # The tanh loss sums presence over the global batch: every rank sees the single-process value.
    for r in ranks:
        assert r["parts"]["tanh"].item() == pytest.approx(single["tanh"].item(), rel=1e-5)
    # Means over images: the average over ranks equals the single-process mean.
    for part in ("align", "classification"):
        mean = sum(r["parts"][part].item() for r in ranks) / 2
        assert mean == pytest.approx(single[part].item(), rel=1e-5)
    # DDP averages gradients: they equal the single-process gradient of the global batch.
    grads = {k: p.grad for k, p in single_model.named_parameters() if p.grad is not None}
    assert grads.keys() == ranks[0]["grads"].keys()
    for k, g in grads.items():
        assert torch.allclose(ranks[0]["grads"][k], g, rtol=1e-4, atol=1e-6), k
        assert torch.equal(ranks[0]["grads"][k], ranks[1]["grads"][k])


def test_torchrun_training_completes(tmp_path):
    from test_train import tiny_config

    cfg = tiny_config(tmp_path / "run", epochs_pretrain=1, epochs=2, freeze_epochs=1)
    (tmp_path / "cfg.yaml").write_text(dump_config(cfg))
    done = _torchrun(["-m", "pipnet", "train", "--config", str(tmp_path / "cfg.yaml")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "model.safetensors").is_file() and (run / "metrics.json").is_file()
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 3  # rank 0 alone writes the log
