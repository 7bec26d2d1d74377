"""A metric for test_two_processes.py: which samples reached the evaluator (mmengine collects every process's
results and cuts the distributed sampler's padding off by the data set's length)."""

from mmdet3d.registry import METRICS
from mmengine.evaluator import BaseMetric


@METRICS.register_module()
class SampleIndexCount(BaseMetric):
    default_prefix = "count"

    def process(self, data_batch, data_samples) -> None:
        for sample in data_samples:
            self.results.append(int(sample["sample_idx"]))

    def compute_metrics(self, results: list) -> dict[str, float]:
        return {"samples": float(len(results)), "distinct": float(len(set(results)))}
