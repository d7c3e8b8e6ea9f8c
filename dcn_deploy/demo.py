"""The demo, as a library call: train a small deformable CNN, export it, verify it, benchmark it.

    from dcn_deploy.demo import DemoConfig, run_demo
    result = run_demo(DemoConfig(output_dir="artifacts/demo"))
    print(result.table())

Steps (each a call into the library, as a user would make them):

1. draw distorted digits (``dcn_deploy.models.demo.make_digits``: training and held-out sets from different seeds);
2. train ``DemoNet`` (two modulated deformable convolutions) with AdamW and a one-cycle schedule, with a progress bar;
3. save the weights;
4. export with ``dcn_deploy.onnx.export.export`` (deformable layers -> ``dcn_deploy::DeformConv2d``, dynamic
   batch/height/width; the exporter checks the file and verifies it on random inputs);
5. run the held-out set through ONNX Runtime (``OrtRunner``) and PyTorch (``TorchRunner``): accuracy of each,
   agreeing predictions, max abs/rel error of the logits (``dcn_deploy.compare``);
6. benchmark PyTorch vs ONNX Runtime at a few batch sizes (``dcn_deploy.bench``);
7. write every artefact (weights, ONNX file, sample inputs, JSON reports) to ``output_dir``.
"""
from __future__ import annotations

import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .io_utils import atomic_path, atomic_write_text
from .json_text import json_text
from .progress import Progress

__all__ = ["DemoConfig", "DemoResult", "run_demo", "TARGET_ACCURACY"]

TARGET_ACCURACY = 0.95  # what the default configuration reaches on the held-out digits (measured ~0.98-0.99)


@dataclass
class DemoConfig:
    """Everything the demo does is set here; the defaults run in well under a minute on 2 CPU cores."""

    output_dir: Path = Path("artifacts/demo")
    train_size: int = 4000
    test_size: int = 1000
    epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 5e-3
    width: int = 32
    seed: int = 0
    bench_batches: Tuple[int, ...] = (1, 32)
    bench_iterations: int = 50
    bench_warmup: int = 5
    eval_batch: int = 250
    progress: bool = True

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        # every count is checked here, not minutes later when training, export or the benchmark reaches it
        counts = ("train_size", "test_size", "epochs", "batch_size", "width", "bench_iterations", "eval_batch")
        for name in counts + ("bench_warmup", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"DemoConfig.{name} must be an int, got {value!r}")
            if value < (1 if name in counts else 0):
                raise ValueError(f"DemoConfig.{name} must be >= {1 if name in counts else 0}, got {value}")
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)):
            raise TypeError(f"DemoConfig.learning_rate must be a number, got {self.learning_rate!r}")
        if isinstance(self.bench_batches, (str, bytes)) or not hasattr(self.bench_batches, "__iter__"):
            raise TypeError(f"DemoConfig.bench_batches must be a tuple of ints, e.g. (1, 32), got {self.bench_batches!r}")
        self.bench_batches = tuple(self.bench_batches)
        if not self.bench_batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                                         for b in self.bench_batches):
            raise ValueError(f"DemoConfig.bench_batches must hold ints >= 1, e.g. (1, 32), got {self.bench_batches!r}")
        if self.width % 2:
            raise ValueError(f"DemoConfig.width must be even (the stem has width/2 channels), got {self.width}")
        if not self.learning_rate > 0:
            raise ValueError(f"DemoConfig.learning_rate must be > 0, got {self.learning_rate}")
        self.bench_batches = tuple(int(b) for b in self.bench_batches)


@dataclass
class DemoResult:
    """What the demo measured and wrote. ``table()`` is the final summary."""

    config: DemoConfig
    torch_accuracy: float
    ort_accuracy: float
    predictions_agree: int
    test_size: int
    max_abs_error: float
    max_rel_error: float
    logits_within_tolerance: bool
    export_verified: bool
    latency_ms: Dict[str, Dict[int, float]]  # runner -> batch -> median ms
    seconds: Dict[str, float]
    history: List[Dict[str, float]]
    artefacts: Dict[str, Path] = field(default_factory=dict)
    input_name: str = "image"  # the ONNX file's input
    bench: Optional[object] = None  # dcn_deploy.bench.BenchResult

    @property
    def passed(self) -> bool:
        """ONNX Runtime reproduces PyTorch: same predictions on every held-out image, logits within tolerance."""
        return (self.logits_within_tolerance and self.export_verified
                and self.predictions_agree == self.test_size and self.torch_accuracy == self.ort_accuracy)

    def to_dict(self) -> dict:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.config).items()}
        return {
            "passed": self.passed, "config": config, "target_accuracy": TARGET_ACCURACY,
            "accuracy": {"torch": self.torch_accuracy, "onnxruntime": self.ort_accuracy},
            "predictions_agree": self.predictions_agree, "test_size": self.test_size,
            "logits": {"max_abs_error": self.max_abs_error, "max_rel_error": self.max_rel_error,
                       "within_tolerance": self.logits_within_tolerance},
            "export_verified": self.export_verified,
            "latency_median_ms": {r: {str(b): v for b, v in d.items()} for r, d in self.latency_ms.items()},
            "seconds": self.seconds, "history": self.history,
            "artefacts": {k: str(v) for k, v in self.artefacts.items()},
        }

    def table(self) -> str:
        runners = list(self.latency_ms)
        rows = [("", "PyTorch (eager)", "ONNX Runtime (CPU)"),
                ("held-out accuracy", f"{self.torch_accuracy:.2%}", f"{self.ort_accuracy:.2%}"),
                ("predictions equal to PyTorch's", "-", f"{self.predictions_agree}/{self.test_size}"),
                ("max abs error of logits", "-", f"{self.max_abs_error:.2e}"),
                ("max rel error of logits", "-", f"{self.max_rel_error:.2e}")]
        batches = sorted({b for d in self.latency_ms.values() for b in d})
        for batch in batches:
            cells = [f"{self.latency_ms[r][batch]:.2f} ms" if batch in self.latency_ms[r] else "-" for r in runners]
            rows.append((f"median latency, batch {batch}", *cells))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                 for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        verdict = ("PASS: ONNX Runtime reproduces PyTorch (same predictions, logits within tolerance)" if self.passed
                   else "FAIL: ONNX Runtime differs from PyTorch (see the numbers above)")
        return "\n".join(lines + [verdict])


def _say_default(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _train(model, images, labels, config: DemoConfig, say) -> List[Dict[str, float]]:
    import torch
    import torch.nn.functional as F

    steps_per_epoch = (len(images) + config.batch_size - 1) // config.batch_size
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    total_steps = config.epochs * steps_per_epoch
    # One-cycle needs at least two warm-up steps (pct_start * total_steps >= 2, else it divides by zero); a
    # shorter run (a few hundred images, one epoch) keeps the constant learning rate.
    schedule = (torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=total_steps,
                                                    pct_start=0.25) if total_steps >= 8 else None)
    bar = Progress(total_steps, description="[demo] training", unit="steps", enabled=config.progress)
    history = []
    model.train()
    try:
        for epoch in range(config.epochs):
            order = torch.randperm(len(images))
            seen = correct = 0
            loss_sum = 0.0
            for start in range(0, len(images), config.batch_size):
                index = order[start:start + config.batch_size]
                logits = model(images[index])
                loss = F.cross_entropy(logits, labels[index])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if schedule is not None:
                    schedule.step()
                seen += len(index)
                correct += int((logits.argmax(1) == labels[index]).sum())
                loss_sum += loss.item() * len(index)
                bar.set_status(f"epoch {epoch + 1}/{config.epochs} loss {loss_sum / seen:.3f} "
                               f"train acc {correct / seen:.1%}")
                bar.update(1)
            history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen})
            if not config.progress:
                say(f"[demo] epoch {epoch + 1}/{config.epochs}: loss {loss_sum / seen:.3f}, "
                    f"train accuracy {correct / seen:.1%}")
    finally:
        bar.close()
    model.eval()
    return history


def _predict(runner, images: np.ndarray, batch: int) -> np.ndarray:
    """Logits of a runner over ``images`` in batches: (len(images), classes)."""
    name = runner.input_metadata()[0].name
    parts = []
    for start in range(0, len(images), batch):
        outputs = runner.infer({name: images[start:start + batch]})
        parts.append(next(iter(outputs.values())))
    return np.concatenate(parts)


@contextmanager
def _timed(seconds: Dict[str, float], step: str) -> Iterator[None]:
    """Record the wall time of the ``with`` block as ``seconds[step]`` (when it finishes without an error)."""
    start = time.perf_counter()
    yield
    seconds[step] = time.perf_counter() - start


def run_demo(config: Optional[DemoConfig] = None, say: Callable[[str], None] = _say_default) -> "DemoResult":
    """Run every step of the demo (see the module docstring) and return its :class:`DemoResult`."""
    import torch

    from .backends.ort_runner import OrtRunner
    from .backends.torch_runner import TorchRunner
    from .bench import benchmark
    from .compare import compare_outputs
    from .models.demo import DemoNet, make_digits
    from .onnx.export import export

    config = config or DemoConfig()
    out = config.output_dir
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        from .wording import argument

        raise ValueError(f"{argument('output_dir', '--output-dir')} {out}: {blocking} is a file, not a folder; "
                         "choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    seconds: Dict[str, float] = {}
    total_start = time.perf_counter()

    with _timed(seconds, "data"):
        say(f"[demo] drawing {config.train_size} training and {config.test_size} held-out digits "
            "(5x7 font, random rotation/scale/shear/shift, noise)")
        train_x, train_y = make_digits(config.train_size, seed=config.seed)
        test_x, test_y = make_digits(config.test_size, seed=config.seed + 1)  # another seed: unseen distortions

    with _timed(seconds, "train"):
        torch.manual_seed(config.seed)
        model = DemoNet(width=config.width)
        say(f"[demo] training DemoNet ({sum(p.numel() for p in model.parameters()):,} parameters, 2 modulated "
            f"deformable convolutions) for {config.epochs} epoch{'' if config.epochs == 1 else 's'} on "
            f"{torch.get_num_threads()} CPU threads")
        history = _train(model, train_x, train_y, config, say)

    weights_path = out / "demo_weights.pt"
    with atomic_path(weights_path) as tmp:
        torch.save(model.state_dict(), str(tmp))

    onnx_path = out / "demo.onnx"
    with _timed(seconds, "export"):
        report = export(model, (test_x[:1],), onnx_path, dynamic=True, verify=True, output_names=["logits"],
                        progress=lambda message: say(f"[demo] export: {message}"))

    with _timed(seconds, "verify"):
        say("[demo] running the held-out digits through PyTorch and ONNX Runtime")
        test_images = test_x.numpy()
        test_labels = test_y.numpy()
        with OrtRunner(onnx_path) as ort_runner:
            inputs = ort_runner.input_metadata()
            output_names = [m.name for m in ort_runner.output_metadata()]
            with TorchRunner(model, inputs, output_names=output_names) as torch_runner:
                torch_logits = _predict(torch_runner, test_images, config.eval_batch)
                ort_logits = _predict(ort_runner, test_images, config.eval_batch)
        comparison = compare_outputs("ort", output_names[0], ort_logits, torch_logits, reference="PyTorch")
        torch_pred, ort_pred = torch_logits.argmax(1), ort_logits.argmax(1)

    with _timed(seconds, "bench"):
        say(f"[demo] benchmarking PyTorch vs ONNX Runtime at batch {', '.join(map(str, config.bench_batches))} "
            f"({config.bench_iterations} iterations after {config.bench_warmup} warm-up)")
        bench = benchmark([TorchRunner(model, inputs, output_names=output_names), OrtRunner(onnx_path)],
                          batches=config.bench_batches, shapes={inputs[0].name: (1, 1, 28, 28)},
                          iterations=config.bench_iterations, warmup=config.bench_warmup, seed=config.seed,
                          progress=config.progress, progress_prefix="[demo] ")

    latency: Dict[str, Dict[int, float]] = {}
    for entry in bench.entries:
        latency.setdefault(entry.runner, {})[entry.batch] = entry.latency_ms.median
    result = DemoResult(
        config=config, torch_accuracy=float((torch_pred == test_labels).mean()),
        ort_accuracy=float((ort_pred == test_labels).mean()), predictions_agree=int((torch_pred == ort_pred).sum()),
        test_size=len(test_labels), max_abs_error=comparison.max_abs, max_rel_error=comparison.max_rel,
        logits_within_tolerance=comparison.passed, export_verified=report.verified, latency_ms=latency,
        seconds=seconds, history=history, bench=bench, input_name=inputs[0].name)
    result.artefacts = {"onnx": onnx_path, "weights": weights_path}
    _write_reports(result, report, test_images[:16], test_labels[:16], total_start)
    return result


def _write_reports(result: DemoResult, export_report, sample_images: np.ndarray, sample_labels: np.ndarray,
                   total_start: float) -> None:
    """Write the sample inputs, the benchmark and the demo report into the output folder; list them in
    ``result.artefacts`` and set ``result.seconds["total"]`` (counted from ``total_start``)."""
    out = result.config.output_dir
    sample_path = out / "sample_digits.npy"
    labels_path = out / "sample_labels.npy"
    for path, array in ((sample_path, sample_images), (labels_path, sample_labels)):
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array)
    bench_path = out / "bench.json"
    atomic_write_text(bench_path, result.bench.to_json() + "\n")
    report_path = out / "demo_report.json"
    result.seconds["total"] = time.perf_counter() - total_start
    result.artefacts.update({"sample_inputs": sample_path, "sample_labels": labels_path, "bench": bench_path,
                             "report": report_path})
    atomic_write_text(report_path, json_text({**result.to_dict(), "export": export_report.to_dict()})
                      + "\n")


def cli_command() -> str:
    """How to call ``dcn-deploy`` from this shell: the bare name when it is on PATH, else the script beside this
    Python (``./dev demo`` runs from .venv without activating it), relative to the working folder when inside it."""
    if shutil.which("dcn-deploy"):
        return "dcn-deploy"
    script = Path(sys.executable).parent / "dcn-deploy"
    if not script.exists():
        return "dcn-deploy"
    try:
        return str(Path(".") / script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def next_steps(result: DemoResult) -> Sequence[str]:
    """Commands a user can try on the demo's artefacts, pasteable into the shell that ran the demo."""
    a = result.artefacts
    cli = cli_command()
    # The file has dynamic batch/height/width: random inputs need a size.
    shape = f"--shape {result.input_name}=1x1x28x28"
    return (
        f"{cli} inspect {a['onnx']}",
        f"{cli} verify {a['onnx']} --against torch --model dcn_deploy.models.demo:DemoNet "
        f"--weights {a['weights']} {shape}",
        f"{cli} bench {a['onnx']} {shape} --batch 1,8,32 --duration 2",
        f"{cli} infer {a['onnx']} --input {a['sample_inputs']} -o {result.config.output_dir / 'logits.npz'}",
    )
