"""Model validation: parameter count, forward at several sizes and batches, gradient flow."""
from dataclasses import dataclass, field

import torch

import featherface
from featherface.heads import Detector


@dataclass
class ValidationReport:
    model: str
    params: int
    expected_params: int | None
    tolerance: float
    forwards: list[tuple[int, int, bool, str]] = field(default_factory=list)  # batch, size, ok, detail
    params_without_grad: list[str] = field(default_factory=list)

    @property
    def params_ok(self) -> bool:
        if self.expected_params is None:
            return True
        return abs(self.params - self.expected_params) <= self.tolerance * self.expected_params

    @property
    def ok(self) -> bool:
        return self.params_ok and all(f[2] for f in self.forwards) and not self.params_without_grad


def _check_forward(model: Detector, batch: int, size: int) -> tuple[bool, str]:
    with torch.inference_mode():
        loc, conf, landms = model(torch.randn(batch, 3, size, size) * 50)
    anchors = model.priors.num_priors(size, size)
    expected = [(batch, anchors, 4), (batch, anchors, 2), (batch, anchors, 10)]
    shapes = [tuple(t.shape) for t in (loc, conf, landms)]
    if shapes != expected:
        return False, f"shapes {shapes}, expected {expected}"
    if not all(torch.isfinite(t).all() for t in (loc, conf, landms)):
        return False, "non-finite outputs"
    if not torch.allclose(conf.sum(-1), torch.ones(()), atol=1e-4):
        return False, "conf rows do not sum to 1"
    return True, f"{anchors} anchors"


def params_without_gradient(model: Detector, size: int = 128, steps: int = 3) -> list[str]:
    """Names of trainable parameters that receive no (or an all-zero) gradient from ``steps`` training-mode steps.

    Gradients are summed over several seeded inputs: with random weights a small gate (CBAM's channel MLP has a
    few hidden ReLUs) can be dead for one input — a flaky all-zero gradient, not a disconnected parameter."""
    model.train()
    model.zero_grad()
    for step in range(steps):
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(step)) * 50
        loc, conf, landms = model(x)
        (loc.square().mean() + conf.square().mean() + landms.square().mean()).backward()
    model.eval()
    return [n for n, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))]


def validate_model(name: str, weights=None, sizes=(320, 640, 1024), batches=(1, 4)) -> ValidationReport:
    model = featherface.load_model(name, weights)
    report = ValidationReport(name, featherface.count_parameters(model), model.expected_params,
                              model.params_tolerance)
    for size in sizes:
        for batch in batches:
            report.forwards.append((batch, size, *_check_forward(model, batch, size)))
    report.params_without_grad = params_without_gradient(model)
    return report
