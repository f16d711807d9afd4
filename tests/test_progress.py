"""Progress bars on a terminal and in a build log (edgecompress.progress): tqdm's redrawn bars on a
TTY; where stderr is a file or pipe (the mobile teams' CI), plain lines, one per finished bar and
at most one a minute while it runs, each ending its line."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from edgecompress import progress

# A finished bar's line in a log: "calibrating (onnxruntime): 169/169 batch in 21.3 s"
DONE = re.compile(r"^(?P<desc>[^\n]+): (?P<n>\d+)/(?P<total>\d+) (?P<unit>\w+)(?: \([^\n]*\))? in \d[^\n]* s$",
                  re.MULTILINE)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """tqdm's clock, stepped by the test; no monitor thread refreshing bars on its own."""
    now = [1000.0]
    monkeypatch.setattr("tqdm.std.time", lambda: now[0])
    monkeypatch.setattr(progress.LineBar, "monitor_interval", 0)
    return now


def test_a_terminal_gets_tqdm_s_own_bar():
    tty = FakeTTY()
    for _ in progress.bar(range(40), desc="calibration", unit="img", leave=False, file=tty, mininterval=0):
        pass
    out = tty.getvalue()
    # redrawn in place and cleared, exactly as tqdm.auto draws it
    assert out.count("\r") > 40 and "calibration: 100%|" in out and "40/40" in out
    assert not DONE.search(out) and "\n" not in out


def test_a_log_gets_a_line_a_minute_and_one_when_done(clock):
    log = io.StringIO()
    bar = progress.bar(total=300, desc="calibration", unit="img", leave=False, file=log)
    for _ in range(300):  # 150 s in all
        clock[0] += 0.5
        bar.update(1)
    bar.close()
    bar.close()  # (tqdm's __del__ closes again)
    text = log.getvalue()
    lines = text.splitlines(keepends=True)
    assert "\r" not in text and all(line.endswith("\n") for line in lines)
    assert [re.sub(r"\d+/300", "N/300", line) for line in lines[:-1]] == [
        "calibration: N/300 img, 1 min 00 s so far\n", "calibration: N/300 img, 2 min 00 s so far\n"]
    assert lines[-1] == "calibration: 300/300 img in 2 min 30 s\n"


def test_no_so_far_line_after_the_last_line_or_at_the_total(clock):
    """A bar interrupted a minute after its last line wrote "so far" after "stopped after"; one
    finishing then wrote a "so far" line just before its final one."""
    log = io.StringIO()
    bar = progress.bar(total=10, desc="calibration", unit="batch", file=log)
    bar.update(3)
    clock[0] += 90
    bar.close()
    assert log.getvalue() == "calibration: 3/10 batch stopped after 1 min 30 s\n"
    log = io.StringIO()
    bar = progress.bar(total=10, desc="calibration", unit="batch", file=log)
    bar.update(9)
    clock[0] += 90
    bar.update(1)
    bar.close()
    assert log.getvalue() == "calibration: 10/10 batch in 1 min 30 s\n"


def test_a_log_line_for_an_iterated_bar_a_broken_off_one_and_none_when_disabled(clock):
    log = io.StringIO()
    bar = progress.bar(range(8), desc="prune (reconstruct)", unit="chain", file=log)
    for _ in bar:
        clock[0] += 0.25
    assert log.getvalue() == "prune (reconstruct): 8/8 chain in 2.0 s\n"

    log = io.StringIO()
    bar = progress.bar(total=10, desc="distill", unit="batch", file=log)
    bar.update(4)
    bar.set_postfix(epoch=1, loss="0.1234")
    clock[0] += 3
    bar.close()  # an error or a break: the line does not read as finished
    assert log.getvalue() == "distill: 4/10 batch (epoch=1, loss=0.1234) stopped after 3.0 s\n"

    log = io.StringIO()
    for _ in progress.bar(range(5), desc="quiet", file=log, disable=True):  # --no-progress
        pass
    assert log.getvalue() == ""


def test_export_s_stderr_to_a_pipe_has_lines_not_redraws(tmp_path):
    """The audit's case: with stderr a pipe, the summary table shared a line with the last bar's
    `\\r<spaces>\\r` and every bar wrote dozens of carriage-return updates. NNCF's own (rich)
    bars are covered by the openvino int8 export."""
    r = subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", "export", "zoo:digits-cnn", "-f", "onnx", "-f", "openvino",
         "--int8", "--out", str(tmp_path / "e"), "--runs", "2", "--warmup", "0", "--rounds", "1"],
        capture_output=True, timeout=900)  # bytes: text mode would turn \r into \n
    err = r.stderr.decode()
    assert r.returncode == 0, err[-2000:]
    assert "\r" not in err and "%|" not in err
    assert re.search(r"^format +precision", err, re.MULTILINE)  # the table starts its own line
    done = {m["desc"]: (int(m["n"]), int(m["total"]), m["unit"]) for m in DONE.finditer(err)}
    assert done["calibrating (onnxruntime)"][2] == "batch"
    n, total, _ = done["calibrating (nncf)"]
    assert n == total  # NNCF took every sample (it stops reading after the last one)
    assert done["validating on x86-local"] == (4, 4, "run")
    # NNCF's rich bars print once, finished, on a line of their own
    assert re.search(r"^Statistics collection .*100%", err, re.MULTILINE)
