"""Multi-process training with torchrun (gloo, 2 CPU processes): faithful global-batch losses."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402

from pipnet.core.train_config import dump_config  # noqa: E402

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


def _torchrun(args, cwd, timeout=240):
    cmd = [TORCHRUN, "--nproc_per_node=2", "--master_port=0", "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:0"]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
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


@pytest.mark.slow
def test_torchrun_training_completes(tmp_path):
    from test_train import tiny_config

    cfg = tiny_config(tmp_path / "run", epochs_pretrain=1, epochs=2, freeze_epochs=1)
    (tmp_path / "cfg.yaml").write_text(dump_config(cfg))
    done = _torchrun(["-m", "pipnet", "train", "--config", str(tmp_path / "cfg.yaml")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "model.safetensors").is_file() and (run / "metrics.json").is_file()
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 3  # rank 0 alone writes the log


def test_global_batches_are_those_of_one_process_split_between_ranks():
    from torch.utils.data import BatchSampler, RandomSampler

    from pipnet.train.distributed import GlobalBatchSampler

    n, batch = 23, 8
    single = list(BatchSampler(RandomSampler(range(n), generator=torch.Generator().manual_seed(5)), batch, drop_last=True))
    assert list(GlobalBatchSampler(n, batch, torch.Generator().manual_seed(5))) == single
    ranks = [list(GlobalBatchSampler(n, batch, torch.Generator().manual_seed(5), rank=r, world_size=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == single
    assert len(GlobalBatchSampler(n, batch, torch.Generator(), rank=1, world_size=2)) == 2
    assert GlobalBatchSampler(n, 3, torch.Generator(), world_size=2).global_batch == 2  # a multiple of the ranks


def _tiny_ln(out):
    """The reliability tests' tiny LayerNorm network: BatchNorm statistics would be per process on the
    CPU, where SyncBatchNorm does not run, and the runs could not match."""
    from reliability_helpers import tiny_config

    return tiny_config(out, epochs_pretrain=1, epochs=4, freeze_epochs=1)


def _assert_same_training(one: Path, two: Path) -> None:
    """Same losses per epoch, weights and metrics (to float tolerance)."""
    from safetensors.torch import load_file

    def history(run):
        rows = (run / "history.csv").read_text().splitlines()
        header = rows[0].split(",")
        keys = ("loss", "align", "tanh", "classification")
        return [{k: float(v) for k, v in zip(header, r.split(",")) if k in keys and v} for r in rows[1:]]

    h1, h2 = history(one), history(two)
    assert len(h1) == len(h2) == 5
    for a, b in zip(h1, h2):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-3 * max(1.0, abs(a[k])) for k in a), (h1, h2)
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=1e-3, atol=1e-4), k
    m1, m2 = (json.loads((run / "metrics.json").read_text()) for run in (one, two))
    for key in ("top1_accuracy", "sparsity_ratio", "global_size", "local_size"):
        assert m1[key] == pytest.approx(m2[key], abs=1e-6), key


@pytest.mark.slow
def test_two_processes_train_like_one_process(tmp_path):
    """Same global batches, same per-image augmentation, the global-batch tanh loss and averaged
    gradients: a 2-process torchrun run ends with the single-process run's losses, weights and metrics
    (measured: weights equal to 1.5e-6)."""
    from pipnet.train import train

    train(_tiny_ln(tmp_path / "one"))
    (tmp_path / "two.yaml").write_text(dump_config(_tiny_ln(tmp_path / "two")))
    done = _torchrun(["-m", "pipnet", "train", "--config", str(tmp_path / "two.yaml")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_training(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_with_torchrun(tmp_path):
    import os
    import signal
    import time

    from pipnet.train import train

    train(_tiny_ln(tmp_path / "one"))
    (tmp_path / "two.yaml").write_text(dump_config(_tiny_ln(tmp_path / "two")))
    cmd = [TORCHRUN, "--nproc_per_node=2", "--master_port=0", "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:0"]
    proc = subprocess.Popen([*cmd, "-m", "pipnet", "train", "--config", str(tmp_path / "two.yaml")], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    history = tmp_path / "two" / "history.csv"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 1 + 2:  # 2 of 5 epochs done
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
    proc.wait()
    assert not (tmp_path / "two" / "model.safetensors").exists()
    done = _torchrun(["-m", "pipnet", "train", "--resume", str(tmp_path / "two")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_training(tmp_path / "one", tmp_path / "two")
