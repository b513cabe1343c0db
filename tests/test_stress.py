"""Interpreters running truly in parallel (own GILs, own threads) share
values while the registry is being changed under them."""

import textwrap

from support import run_child

STRESS = """
import threading, sys
import tpshare, tpshare_testext as ext
from support import _stdinterp, _create, _run

CHURNS = 50_000          # each is a register and an unregister
LOOPS = 30_000

results = {}

def worker(iid):
    _run(iid, textwrap.dedent('''
        import tpshare, tpshare_testext as ext
        ok = failed = wrong = 0
        big = 2**100
        for i in range(LOOPS):
            v = (i, "s%d" % i, big + i, b"b" * (i % 50), (None, 1.5))
            if tpshare.share(v).rebuild() != v:
                wrong += 1
            c = ext.Churn(i)
            try:
                r = tpshare.share(c).rebuild()
            except tpshare.NotShareableError:
                failed += 1
            else:
                ok += 1
                if type(r) is not ext.Churn or r.value != i:
                    wrong += 1
        import os
        os.write(FD, b"%d %d %d\\\\n" % (ok, failed, wrong))
    ''').replace("LOOPS", str(LOOPS)).replace("FD", str(wfd)))

import os, textwrap
rfd, wfd = os.pipe()
ids = [_create() for _ in range(2)]
for iid in ids:
    _run(iid, "import tpshare_testext")
threads = [threading.Thread(target=worker, args=(iid,)) for iid in ids]
for t in threads:
    t.start()
done = ext.churn(CHURNS)
for t in threads:
    t.join()
lines = os.read(rfd, 1000).decode().split()
ok1, failed1, wrong1, ok2, failed2, wrong2 = map(int, lines)
print("results", lines, "churned", done)
assert done == CHURNS
assert wrong1 == wrong2 == 0
assert ok1 + ok2 > 0 and failed1 + failed2 > 0, "the churn did not overlap the sharing"
assert ok1 + failed1 == ok2 + failed2 == LOOPS
for iid in ids:
    _stdinterp.destroy(iid)
# After the churn Churn is unregistered everywhere.
assert not tpshare.is_shareable(ext.Churn(1))
print("OK")
"""


def test_parallel_sharing_while_the_registry_churns():
    r = run_child(STRESS, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout
    print(r.stdout)
