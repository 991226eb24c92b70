"""Reserve CPU 1 for benchmark processes (env EDGEKIT_BENCHCORE=1) while one runs; everything else on CPU 0.
When no benchmark runs, every process may use both CPUs again."""
import os, time
BENCH, OTHER, ALL = {1}, {0}, {0, 1}
def marked(pid):
    try:
        with open('/proc/%s/environ' % pid, 'rb') as f:
            return b'EDGEKIT_BENCHCORE=1\0' in f.read()
    except Exception:
        return None
me = str(os.getpid())
while True:
    marks = {p: marked(p) for p in os.listdir('/proc') if p.isdigit() and p != me}
    active = any(marks.values())
    for p, m in marks.items():
        if m is None:
            continue
        want = (BENCH if m else OTHER) if active else ALL
        try:
            for t in os.listdir('/proc/%s/task' % p):
                t = int(t)
                if os.sched_getaffinity(t) != want:
                    os.sched_setaffinity(t, want)
        except Exception:
            pass
    time.sleep(0.5)
