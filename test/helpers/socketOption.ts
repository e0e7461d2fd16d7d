import { execFile } from 'node:child_process';

/**
 * Reads TCP_NODELAY of the kernel socket in this process whose peer is `127.0.0.1:peerPort`: a
 * python3 child takes a copy of each of our socket descriptors (pidfd_getfd(2), Linux 5.6) and
 * asks the kernel, since Node has no getsockopt(2). Resolves with 0 or 1, or rejects when no such
 * socket is found.
 */
export function tcpNoDelayOfPeer(python: string, peerPort: number): Promise<number> {
  const script = `
import ctypes, os, socket, sys
pid, port = int(sys.argv[1]), int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
pidfd = os.pidfd_open(pid)
for name in os.listdir(f"/proc/{pid}/fd"):
    try:
        if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"): continue
    except OSError:
        continue
    fd = libc.syscall(438, pidfd, int(name), 0)  # pidfd_getfd
    if fd < 0: continue
    s = socket.socket(fileno=fd)
    try:
        if s.family == socket.AF_INET and s.type == socket.SOCK_STREAM and s.getpeername() == ("127.0.0.1", port):
            print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)); sys.exit(0)
    except OSError:
        pass
    finally:
        s.close()
sys.exit(3)
`;
  return new Promise((resolve, reject) => {
    execFile(
      python,
      ['-c', script, String(process.pid), String(peerPort)],
      { timeout: 10_000 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`no socket with peer port ${String(peerPort)}: ${stderr}`));
        else resolve(Number(stdout.trim()) === 0 ? 0 : 1);
      },
    );
  });
}
