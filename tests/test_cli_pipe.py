"""The CLI stops quietly when the reader of its output goes away (``aetnet formats show pages | head``)."""

import subprocess
import sys


def test_closed_pipe_gives_no_traceback():
    proc = subprocess.Popen([sys.executable, "-m", "aetnet", "formats", "show", "pages"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # like `head -1`: the rest of the schema has nowhere to go
    _, err = proc.communicate(timeout=120)
    assert first.strip() == b"{"
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode(errors="replace")
