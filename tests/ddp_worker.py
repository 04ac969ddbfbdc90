"""Run under torchrun by tests/test_distributed.py: one training step's losses and gradients per rank."""

import sys

import torch

import pipnet
from pipnet.train.distributed import init_distributed
from pipnet.train.step import training_step_losses
from pipnet.train.phases import plan_epochs
from pipnet.core.train_config import ScheduleConfig


def global_batch():
    g = torch.Generator().manual_seed(123)
    x1, x2 = torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 3, 32, 32, generator=g)
    return x1, x2, torch.tensor([0, 1, 2, 1])


def step(model, x1, x2, y, info):
    plan = [p for p in plan_epochs(ScheduleConfig(epochs_pretrain=1, epochs=5, freeze_epochs=2)) if p.name == "full"][0]
    out = model(torch.cat([x1, x2]))
    parts = training_step_losses(out, y, plan, torch.tensor(2.0), info)
    parts["loss"].backward()
    return parts


def model():
    torch.manual_seed(0)
    return pipnet.create_model("resnet18", num_classes=3, num_features=8).eval()  # eval: BN uses running stats


if __name__ == "__main__":
    info = init_distributed("cpu")
    net = model()
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    x1, x2, y = global_batch()
    half = slice(2 * info.rank, 2 * info.rank + 2)
    parts = step(ddp, x1[half], x2[half], y[half], info)
    grads = {k: p.grad for k, p in net.named_parameters() if p.grad is not None}
    torch.save({"parts": {k: v.detach() for k, v in parts.items()}, "grads": grads}, f"{sys.argv[1]}/rank{info.rank}.pt")
