"""What the measurement scripts in this folder share: a broker process as /proc sees it (RSS,
descriptors, CPU time), a free loopback port, waiting for a listener, and the few MQTT 3.1.1
packets they speak over plain sockets (so that they measure the broker, not a client library).
"""
import os
import socket
import time

CLK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid, field="VmRSS:"):
    """`field` of /proc/PID/status in KiB (VmRSS by default; VmHWM for the peak); 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid):
    """Open descriptors of PID; -1 if it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def cpu_times(pid):
    """(user, system) CPU seconds of all threads of PID."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK, int(fields[12]) / CLK


def cpu_seconds(pid):
    """User plus system CPU seconds of all threads of PID."""
    user, system = cpu_times(pid)
    return user + system


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout=10.0):
    """Waits until something accepts on 127.0.0.1:PORT; raises if PROC exits or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


def enc_len(n):
    """MQTT's variable byte integer."""
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(b):
    return len(b).to_bytes(2, "big") + b


def packet(first, body):
    return bytes([first]) + enc_len(len(body)) + body


def connect_packet(client_id, keepalive=600, clean=True):
    """A 3.1.1 CONNECT. Keep-alive 600 s by default: long enough to stay idle for a whole
    measurement, and not 0, which rumqttd refuses."""
    cid = client_id.encode() if isinstance(client_id, str) else client_id
    var = mqtt_str(b"MQTT") + bytes([4, 2 if clean else 0]) + keepalive.to_bytes(2, "big")
    return packet(0x10, var + mqtt_str(cid))


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def recv_packet_len(s):
    """Reads one fixed header: (first byte, remaining length)."""
    first = recv_exact(s, 1)[0]
    mult, length = 1, 0
    while True:
        b = recv_exact(s, 1)[0]
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            return first, length


def recv_packet(s):
    """Reads one whole packet: (first byte, body)."""
    first, length = recv_packet_len(s)
    return first, recv_exact(s, length)
