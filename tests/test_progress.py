"""dcn_deploy.progress: a live bar on a terminal, one plain line per quarter of the work in a log."""
import io

from dcn_deploy.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_one_line_per_quarter_with_the_current_description_and_status():
    log = io.StringIO()
    with Progress(10, description="training", unit="steps", stream=log) as bar:
        for step in range(10):
            bar.set_status(f"loss {1.0 / (step + 1):.2f}")
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    # the line comes at the first step past each quarter, and shows the share done then
    assert [line.split(" (")[0] for line in lines] == ["training:  30%", "training:  50%", "training:  80%",
                                                       "training: 100%"]
    assert lines[0].startswith("training:  30% (3/10 steps, ") and lines[0].endswith(" loss 0.33")
    assert lines[-1].endswith(" loss 0.10")


def test_a_large_step_passing_several_quarters_prints_one_line_and_close_adds_the_unfinished_state():
    log = io.StringIO()
    bar = Progress(4.0, description="ort batch 8", unit="s", decimals=1, stream=log)
    bar.update(2.6)  # past 25% and 50% at once
    bar.update(0.3)
    bar.close()
    bar.close()  # closing twice prints nothing more
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("ort batch 8:  65% (2.6/4.0 s, ")
    assert lines[1].startswith("ort batch 8:  72% (2.9/4.0 s, ")


def test_a_finished_run_is_not_printed_twice_and_nothing_done_prints_nothing():
    log = io.StringIO()
    with Progress(2, description="x", stream=log) as bar:
        bar.update(2)
    assert len(log.getvalue().splitlines()) == 1
    empty = io.StringIO()
    Progress(5, description="y", stream=empty).close()
    assert empty.getvalue() == ""


def test_disabled_progress_prints_nothing_but_counts():
    log = io.StringIO()
    bar = Progress(3, description="z", stream=log, enabled=False)
    bar.update(3)
    bar.close()
    assert log.getvalue() == "" and bar.done == 3


def test_a_terminal_gets_a_redrawn_bar():
    screen = _Terminal()
    with Progress(4, description="training", unit="steps", stream=screen) as bar:
        bar.set_status("epoch 1/1")
        bar.update(4)
    text = screen.getvalue()
    assert "\r" in text and "training 100%|" in text and "4/4 steps" in text and "epoch 1/1" in text


def test_a_prefix_goes_before_every_description():
    log = io.StringIO()
    with Progress(2, description="first", stream=log, prefix="[demo] ") as bar:
        bar.update(1)
        bar.set_description("second")
        bar.update(1)
    assert [line.split(":")[0] for line in log.getvalue().splitlines()] == ["[demo] first", "[demo] second"]
    assert bar.description == "[demo] second"
