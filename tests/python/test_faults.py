# The pager's SIGSEGV handler and the rest of the process: faults that are not the pager's reach
# the handler installed before it, also on an alternate signal stack (stack overflows).
import subprocess
import sys


def test_stack_overflow_reaches_faulthandler(tmp_path):
    # Regression: the handler was installed without SA_ONSTACK, so a C stack overflow in a
    # program with an alternate signal stack (faulthandler sets one up) died silently instead
    # of reaching faulthandler, which prints the Python traceback.
    code = f"""
import faulthandler, bigarray
faulthandler.enable()
db = bigarray.open({str(tmp_path / 'db')!r})
a = db.create('x', (1000,), 'f8')
a[:] = 1.0          # faults through the pager: its handler is installed and in use
assert a[:].sum() == 1000.0
faulthandler._stack_overflow()
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "Fatal Python error" in r.stderr, r.stderr
    assert "most recent call first" in r.stderr, r.stderr
