"""Run by test_distributed_eval.py under torchrun: evaluate a set whose size no batch layout divides evenly and
record which samples reached ``metrics_fn`` (the engine's gathered evaluation set)."""

import json
import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

from polyzoo.shared.engine import TrainConfig, Trainer


def main(runs_dir: str, n_eval: int, batch: int) -> None:
    ids = torch.arange(n_eval)
    x = torch.randn(n_eval, 3, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    seen: dict[str, list] = {}

    def metrics(outputs, targets):
        seen["ids"], seen["outputs"] = targets.tolist(), outputs.tolist()
        return {"n": float(len(targets))}

    cfg = TrainConfig(name="ev", runs_dir=runs_dir, batch_size=batch, progress=False, cpu=True, max_steps=1)
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        TensorDataset(x, ids),
        cfg,
        loss_fn=lambda out, y: out.sum() * 0.0,
        eval_data=TensorDataset(x, ids),
        metrics_fn=metrics,
    )
    result = trainer.evaluate()
    if trainer.is_main:
        out = {"processes": trainer.accelerator.num_processes, "result": result, **seen}
        (trainer.run_dir / "eval.json").parent.mkdir(parents=True, exist_ok=True)
        (trainer.run_dir / "eval.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
