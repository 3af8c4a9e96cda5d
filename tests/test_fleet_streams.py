"""Fleet output routing: lines from members and from other threads never mix."""

from __future__ import annotations

import io
import sys
import threading

from migretti_plugins.fleet.streams import Sink, member_output, routed


def test_a_member_line_never_lands_inside_another_threads_line() -> None:
    real = io.StringIO()
    saved = sys.stderr
    sys.stderr = real  # routed() wraps whatever sys.stderr is
    try:
        with routed() as streams:
            # the main thread's print() writes its text and its newline in two calls
            sys.stderr.write("tenant_03: ok in 50 ms")

            def member() -> None:
                with member_output(Sink("tenant_04: ", keep_stdout=True), streams):
                    print("mg: error: relation t_0002 exists", file=sys.stderr)

            worker = threading.Thread(target=member)
            worker.start()
            worker.join()
            sys.stderr.write("\n")
            sys.stderr.write("unfinished at the end")
    finally:
        sys.stderr = saved

    assert real.getvalue().splitlines() == [
        "tenant_04: mg: error: relation t_0002 exists",
        "tenant_03: ok in 50 ms",
        "unfinished at the end",
    ]
