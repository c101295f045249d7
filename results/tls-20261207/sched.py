import ctypes, os, re, sys, time, struct
libc = ctypes.CDLL(None, use_errno=True)
def setattr_(tid, mode):
    policy, prio, ns, nice = 0, 0, 0, 0
    if mode == 'fifo': policy, prio = 1, 1
    elif mode == 'idle': policy = 5
    elif mode.startswith('slice='): ns = int(mode[6:])
    elif mode.startswith('nice='): nice = int(mode[5:])
    elif mode.startswith('both='): ns, nice = [int(x) for x in mode[5:].split(',')]
    attr = struct.pack("IIQiIQQQII", 56, policy, 0, nice, prio, ns, 0, 0, 0, 0)
    r = libc.syscall(314, tid, ctypes.create_string_buffer(attr), 0)
    return r, ctypes.get_errno()
dur = float(sys.argv[1]); pats = [p.split(':') for p in sys.argv[2:]]
done = set(); end = time.time() + dur
while time.time() < end:
    for pid in os.listdir('/proc'):
        if not pid.isdigit(): continue
        try: comm = open(f'/proc/{pid}/comm').read().strip()
        except: continue
        for cp, tp, mode in pats:
            if not re.fullmatch(cp, comm): continue
            try: tids = os.listdir(f'/proc/{pid}/task')
            except: continue
            for t in tids:
                if (pid, t) in done: continue
                try: tc = open(f'/proc/{pid}/task/{t}/comm').read().strip()
                except: continue
                if re.fullmatch(tp, tc):
                    print(comm, tc, t, mode, setattr_(int(t), mode), flush=True); done.add((pid, t))
    time.sleep(0.1)
