"""A tiny training job run by test_distributed.py under torchrun (2 CPU processes, gloo)."""

import json
import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

from polyzoo.shared.engine import TrainConfig, Trainer


def main(runs_dir: str, resume: bool, stop_at: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = TrainConfig(
        name="ddp", runs_dir=runs_dir, epochs=2, batch_size=4, checkpoint_every=3, progress=False, cpu=True, log_every=1
    )
    trainer = Trainer(
        model,
        opt,
        TensorDataset(x, y),
        cfg,
        loss_fn=nn.functional.cross_entropy,
        eval_data=TensorDataset(x[:20], y[:20]),
    )
    if stop_at:

        def interrupt(t, _):
            if t.global_step == stop_at:
                sys.exit(3)

        trainer.callbacks.append(interrupt)
    metrics = trainer.fit(resume=resume)
    if trainer.is_main:
        weights = {k: v.tolist() for k, v in trainer.unwrapped_model.state_dict().items()}
        out = {
            "processes": trainer.accelerator.num_processes,
            "steps": trainer.global_step,
            "metrics": metrics,
            "weights": weights,
        }
        (trainer.run_dir / "result.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "resume", int(sys.argv[3]))
