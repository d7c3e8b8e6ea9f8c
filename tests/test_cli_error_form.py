"""Every error the CLI prints has our form, ``error: MESSAGE`` on stderr with our exit code: also the errors click
finds in the command line itself (an unknown option, a value an option's type refuses, a missing MODEL file), which
click would print as ``Usage: ...`` and ``Error: MESSAGE``, and any ClickException that is not our CliError class
(click shows each exception with its own ``show``: one without ours prints ``Error: MESSAGE``).

Cheap: no model is loaded, no torch is imported by these commands' checks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from cli_helpers import cli_runner
from dcn_deploy.cli import _Group, main
from dcn_deploy.commands import EXIT_BAD_INPUT, CliError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    """A file for click.Path(exists=True): these commands stop at the command line, before reading it."""
    path = tmp_path_factory.mktemp("error_form") / "m.onnx"
    path.write_bytes(b"")
    return str(path)


def assert_our_form(result, exit_code: int, *fragments: str) -> list:
    """``error: ...`` first on stderr with the fragments, the exit code, nothing in click's spelling."""
    lines = result.stderr.splitlines()
    assert result.exit_code == exit_code, (result.output, result.stderr)
    assert lines and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not any(line.startswith(("Error:", "Usage:", "Try '")) for line in lines), result.stderr
    assert "Traceback" not in result.stderr
    return lines


@pytest.mark.parametrize("args, fragment", [
    (["verify", "MISSING", "--against", "ort"], "does not exist"),
    (["verify", "MODEL", "--against", "foo"], "'foo' is not one of"),
    (["verify", "MODEL", "--batch", "0"], "--batch"),
    (["verify", "MODEL", "--seed", "-1"], "--seed"),
    (["verify", "MODEL", "--atol", "abc"], "'abc' is not a valid float"),
    (["verify", "MODEL", "--bogus"], "--bogus"),
    (["verify", "MODEL", "extra"], "extra"),
    (["verify"], "MODEL"),
    (["verify", "MODEL", "--input"], "--input"),  # click names no command here: no usage line (nor does click)
    (["verify", "MODEL", "--debug"], "--debug goes before the command: dcn-deploy --debug verify"),
    (["nosuch"], "nosuch"),
    (["--bogus", "verify", "MODEL"], "--bogus"),  # the group's own command line, parsed before its invoke
    (["zoo", "nosuch"], "nosuch"),  # a subgroup's
    (["export", "net.py:build", "--dtype", "fp8"], "'fp8' is not one of"),  # a callback's click.BadParameter
])
def test_errors_click_finds_in_the_command_line_have_our_form(model_file, tmp_path, args, fragment):
    args = [model_file if a == "MODEL" else str(tmp_path / "missing.onnx") if a == "MISSING" else a for a in args]
    lines = assert_our_form(cli_runner().invoke(main, args, prog_name="dcn-deploy"), EXIT_BAD_INPUT, fragment)
    if "--input" not in args:
        assert len(lines) == 2 and lines[1].startswith("(usage: dcn-deploy") and "--help)" in lines[1], lines
    else:
        assert len(lines) == 1, lines


def test_our_own_errors_keep_one_line(model_file):
    result = cli_runner().invoke(main, ["verify", model_file, "--runner", "ort", "--against", "ort"],
                                 prog_name="dcn-deploy")
    lines = assert_our_form(result, EXIT_BAD_INPUT, "--runner and --against are both 'ort'")
    assert lines == ["error: --runner and --against are both 'ort': choose two different runners"]


class ForeignError(click.ClickException):
    """A ClickException that is not our CliError, such as a CliError class from a second or out-of-date copy of
    dcn_deploy.commands: click's default ``show`` prints ``Error: MESSAGE``."""

    exit_code = EXIT_BAD_INPUT


def _group_raising(exc: BaseException) -> click.Group:
    group = _Group("dcn-deploy")

    @group.command("run")
    def run():
        raise exc

    return group


def test_a_click_exception_of_another_class_is_printed_in_our_form():
    message = "--runner and --against are both 'ort': choose two different runners"
    result = cli_runner().invoke(_group_raising(ForeignError(message)), ["run"], prog_name="dcn-deploy")
    assert assert_our_form(result, EXIT_BAD_INPUT) == [f"error: {message}"]


def test_a_click_exception_keeps_its_exit_code():
    result = cli_runner().invoke(_group_raising(click.ClickException("it failed")), ["run"], prog_name="dcn-deploy")
    assert assert_our_form(result, 1) == ["error: it failed"]


def test_our_cli_error_is_shown_by_itself():
    result = cli_runner().invoke(_group_raising(CliError("bad input")), ["run"], prog_name="dcn-deploy")
    assert assert_our_form(result, EXIT_BAD_INPUT) == ["error: bad input"]


@pytest.mark.parametrize("group", [[], ["zoo"], ["plugin"]], ids=["dcn-deploy", "zoo", "plugin"])
def test_a_bare_group_shows_its_help_and_exits_0(group):
    """As --help does, whatever click's version (click >= 8.2 alone prints it on stderr and exits 2)."""
    result = cli_runner().invoke(main, group, prog_name="dcn-deploy")
    assert result.exit_code == 0 and result.stderr == "", (result.exit_code, result.stderr)
    assert result.output == cli_runner().invoke(main, group + ["--help"], prog_name="dcn-deploy").output
    assert "Commands:" in result.output


def test_a_real_process_started_with_python_m():
    """``python -m dcn_deploy.cli`` (cli.py run as __main__, a second _Group class) and its exit code."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.run([sys.executable, "-m", "dcn_deploy.cli", "verify", "no_such_model.onnx"],
                             capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert process.returncode == EXIT_BAD_INPUT, process.stderr
    assert process.stderr.startswith("error: Invalid value for 'MODEL'"), process.stderr
    assert "Error:" not in process.stderr and "Usage:" not in process.stderr


@pytest.mark.parametrize("args, option, values", [
    (["bench", "{model}", "--runner", "ort", "--runner", "torch"], "--runner", "('ort', 'torch')"),
    (["verify", "{model}", "--batch", "1", "--batch=2"], "--batch", "('1', '2')"),
    (["plugin", "build", "-j2", "--jobs", "3"], "-j", "('2', '3')"),
    (["zoo", "report", "--size", "64", "--size=32"], "--size", "('64', '32')"),
])
def test_an_option_that_takes_one_value_is_refused_when_repeated(model_file, args, option, values):
    """click keeps the last of a repeated single-value option and drops the rest without a word: `bench --runner
    ort --runner torch` timed torch alone. Refused before any work, naming the option and both values."""
    result = cli_runner().invoke(main, [a.format(model=model_file) for a in args])
    assert_our_form(result, EXIT_BAD_INPUT, f"{option} is given 2 times {values}", "give it once")


@pytest.mark.parametrize("args, fix", [
    (["bench", "{model}", "--batch", "1", "--batch", "8"], "--batch 1,8"),
    (["bench", "{model}", "--runner", "ort", "--runner=torch"], "--runner ort,torch"),
    (["export", "{model}", "--input-names", "a", "--input-names", "b"], "--input-names a,b"),
])
def test_a_repeated_list_option_is_answered_with_the_list(model_file, args, fix):
    """`bench --batch 1 --batch 8` means --batch 1,8: the error writes it so."""
    result = cli_runner().invoke(main, [a.format(model=model_file) for a in args])
    assert_our_form(result, EXIT_BAD_INPUT, "is given 2 times", f"give it once, comma-separated: {fix}")


def test_repeatable_options_flags_and_option_like_values_are_not_refused(model_file):
    from dcn_deploy.commands import repeated_options
    from dcn_deploy.commands.bench import command as bench
    from dcn_deploy.commands.infer import command as infer

    assert repeated_options(infer, [model_file, "--input", "a=x.npy", "--input", "b=y.npy"]) == []  # multiple
    assert repeated_options(bench, [model_file, "--json", "--json"]) == []  # a flag
    # a value that looks like an option is the option's value, not a second use of it
    assert repeated_options(bench, [model_file, "--output", "--runner", "--runner", "ort"]) == []
    assert repeated_options(bench, [model_file, "--", "--runner", "x", "--runner", "y"]) == []  # after --


def test_short_option_clusters_and_inline_values_of_several_are_read_as_click_reads_them():
    """A cluster of short options (``-qj2``: the flag -q, then -j with the value 2) uses -j as much as ``-j 2``; an
    inline value of an option that takes several (``--span=a b``) is the first of them, the next token the second,
    whatever it looks like."""
    from dcn_deploy.commands import Command, repeated_options
    from dcn_deploy.commands.plugin import build_command

    assert repeated_options(build_command, ["-qj2", "-j", "3"]) == [("-j", ["2", "3"])]
    assert repeated_options(build_command, ["-q", "-j", "2", "-qj", "3"]) == [("-j", ["2", "3"])]
    assert repeated_options(build_command, ["-qj2"]) == []

    @click.command(cls=Command)
    @click.option("-o", "out")
    @click.option("--span", nargs=2)
    def spans(out, span):
        click.echo(f"{out} {span}")

    args = ["-o", "x", "--span=a", "-o"]  # --span's values: a and -o
    assert repeated_options(spans, args) == []
    result = cli_runner().invoke(spans, args)
    assert result.exit_code == 0 and result.output == "x ('a', '-o')\n", (result.output, result.stderr)
    assert repeated_options(spans, ["-o", "x", "--span", "a", "b", "-oy"]) == [("-o", ["x", "y"])]
    from dcn_deploy.commands.verify import command as verify

    assert repeated_options(verify, ["m", "--atol", "-1", "--atol=-2"]) == [("--atol", ["-1", "-2"])]
    assert repeated_options(verify, ["-", "--seed", "-", "--seed", "3"]) == [("--seed", ["-", "3"])]
    assert repeated_options(verify, ["m", "--atol", "-1e-3", "--input", "-"]) == []


def test_a_repeated_option_does_not_stop_help_or_shell_completion(model_file):
    """--help still shows the help, and the shell's completion of a command line that repeats an option still
    completes (click parses it resiliently) rather than printing the refusal while the user presses Tab."""
    result = cli_runner().invoke(main, ["bench", model_file, "--runner", "ort", "--runner", "torch", "--help"],
                                 prog_name="dcn-deploy")
    assert result.exit_code == 0 and "Usage:" in result.output, (result.output, result.stderr)
    env = {"_DCN_DEPLOY_COMPLETE": "bash_complete", "COMP_WORDS": "dcn-deploy bench m.onnx --runner ort --runner "
           "torch --thr", "COMP_CWORD": "7"}
    result = cli_runner().invoke(main, [], prog_name="dcn-deploy", env=env)
    assert result.exit_code == 0 and "--threads" in result.output, (result.output, result.stderr, result.exception)
