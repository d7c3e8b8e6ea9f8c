"""``dcn-deploy demo``: train, export, verify and benchmark a small deformable CNN (the README's first command)."""
from __future__ import annotations

from pathlib import Path

import click

from ..json_text import json_text
from . import Command


@click.command("demo", cls=Command)
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("artifacts/demo"),
              show_default=True, help="Folder for the weights, the ONNX file, sample inputs and the JSON reports.")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True, help="Training epochs.")
@click.option("--train-size", type=click.IntRange(min=10), default=4000, show_default=True,
              help="Number of procedurally drawn training digits.")
@click.option("--test-size", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Number of held-out digits (drawn from another seed).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Training batch size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=5e-3, show_default=True,
              help="Peak learning rate (one-cycle schedule).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the data, the weights and the inputs.")
@click.option("--bench-iterations", type=click.IntRange(min=1), default=50, show_default=True,
              help="Timed inferences per runner and batch size.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (progress still goes to stderr).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr.")
def command(output_dir: Path, epochs: int, train_size: int, test_size: int, batch_size: int, lr: float, seed: int,
            bench_iterations: int, as_json: bool, progress: bool) -> None:
    """Train a deformable CNN on distorted digits (no download), export it to ONNX with dcn_deploy ops,
    check ONNX Runtime against PyTorch on held-out digits, and time both. Exit 0 when ONNX Runtime
    reproduces PyTorch, 1 when it does not.

    \b
    Examples:
      dcn-deploy demo
      dcn-deploy demo -o /tmp/demo --epochs 3 --json
    """
    import time

    start = time.perf_counter()
    from ..demo import TARGET_ACCURACY, DemoConfig, next_steps, run_demo

    config = DemoConfig(output_dir=output_dir, epochs=epochs, train_size=train_size, test_size=test_size,
                        batch_size=batch_size, learning_rate=lr, seed=seed, bench_iterations=bench_iterations,
                        progress=progress)
    result = run_demo(config, say=lambda message: click.echo(message, err=True))
    total = time.perf_counter() - start
    if as_json:
        click.echo(json_text({**result.to_dict(), "command_seconds": total}))
    else:
        s = result.seconds
        click.echo("")
        click.echo(result.table())
        if result.torch_accuracy < TARGET_ACCURACY:
            click.echo(f"note: accuracy {result.torch_accuracy:.1%} is below the {TARGET_ACCURACY:.0%} the default "
                       "settings reach; train longer (--epochs, --train-size)")
        click.echo(f"time: {total:.1f} s (data {s['data']:.1f}, training {s['train']:.1f}, export {s['export']:.1f}, "
                   f"verification {s['verify']:.1f}, benchmark {s['bench']:.1f})")
        click.echo(f"artefacts in {output_dir}/:")
        for label, path in result.artefacts.items():
            click.echo(f"  {label:<14} {path}")
        click.echo("try next:")
        for line in next_steps(result):
            click.echo(f"  {line}")
    click.get_current_context().exit(0 if result.passed else 1)
