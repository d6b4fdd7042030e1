"""A deliberately tiny Project API server that misbehaves on purpose (stdlib only, fast start).

Tests copy a two-line ``microtvm_api_server.py`` into a temp folder that runs this file; the
behaviour comes from the environment, so one script serves every case:

FAULT_MODE    ok | crash | sigkill | hang | hang_unkillable | garbage | bad_utf8 | not_object |
              wrong_jsonrpc | no_result | no_id | exit_at_start | protocol2 | bad_id | null_id |
              close_reply_pipe | partial_then_exit | crlf | slow_eof | error |
              hang_with_child (starts a long `sleep`, writes its pid to FAULT_CHILD_PID, hangs)
FAULT_AFTER   how many requests to answer normally before misbehaving (default 0)
FAULT_RECORD  a file to append every raw request line to (bytes as received)

In ``error`` mode the server answers each request with the error object given as
``params["options"]["error"]`` (or a SERVER_ERROR), so tests can send any code.
"""
import base64
import json
import os
import signal
import sys
import time


def main():
    argv = sys.argv[1:]
    read_fd = int(argv[argv.index("--read-fd") + 1])
    write_fd = int(argv[argv.index("--write-fd") + 1])
    mode = os.environ.get("FAULT_MODE", "ok")
    after = int(os.environ.get("FAULT_AFTER", "0"))
    record = os.environ.get("FAULT_RECORD")
    if mode == "exit_at_start":
        sys.exit(5)
    rfile = os.fdopen(read_fd, "rb", buffering=0)
    buf = b""
    served = 0

    def send(obj, end=b"\n"):
        os.write(write_fd, json.dumps(obj).encode() + end)

    while True:
        while b"\n" not in buf:
            chunk = rfile.read(65536)
            if not chunk:
                if mode == "slow_eof":
                    time.sleep(30)
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        if record:
            with open(record, "ab") as f:
                f.write(line + b"\n")
        req = json.loads(line)
        rid, method, params = req.get("id"), req["method"], req["params"]
        if served >= after and mode not in ("ok", "slow_eof"):
            if mode == "crash":
                sys.exit(3)
            if mode == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "hang":
                time.sleep(3600)
            if mode == "hang_with_child":  # like a server stuck waiting on `make`
                import subprocess

                child = subprocess.Popen(["sleep", "3600"])
                with open(os.environ["FAULT_CHILD_PID"], "w") as f:
                    f.write(str(child.pid))
                time.sleep(3600)
            if mode == "hang_unkillable":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                time.sleep(3600)
            if mode == "garbage":
                os.write(write_fd, b"this is not json\n")
                continue
            if mode == "bad_utf8":
                os.write(write_fd, b'{"jsonrpc": "2.0", "id": 1, "result": "\xff\xfe"}\n')
                continue
            if mode == "not_object":
                os.write(write_fd, b"[1, 2, 3]\n")
                continue
            if mode == "wrong_jsonrpc":
                send({"jsonrpc": "1.0", "id": rid, "result": None})
                continue
            if mode == "no_result":
                send({"jsonrpc": "2.0", "id": rid})
                continue
            if mode == "no_id":
                send({"jsonrpc": "2.0", "result": None})
                continue
            if mode == "bad_id":
                send({"jsonrpc": "2.0", "id": rid + 1, "result": None})
                continue
            if mode == "null_id":
                send({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "request: bad", "data": None}})
                sys.exit(0)
            if mode == "close_reply_pipe":
                os.close(write_fd)
                time.sleep(3600)
            if mode == "partial_then_exit":
                os.write(write_fd, b'{"jsonrpc": "2.0", "id"')
                sys.exit(7)
            if mode == "error":
                err = (params.get("options") or {}).get("error") or {"code": -32000, "message": "boom", "data": None}
                send({"jsonrpc": "2.0", "id": rid, "error": err})
                served += 1
                continue
        served += 1
        if method == "server_info_query":
            result = {
                "platform_name": "fault",
                "is_template": True,
                "model_library_format_path": "",
                "project_options": [],
                "protocol_version": 2 if mode == "protocol2" else 1,
            }
        elif method == "open_transport":
            result = {"timeouts": {"session_start_retry_timeout_sec": 0, "session_start_timeout_sec": 0,
                                   "session_established_timeout_sec": 0}}
        elif method == "read_transport":
            result = {"data": base64.b85encode(b"x" * params["n"]).decode()}
        else:
            result = None
        end = b"\r\n" if mode == "crlf" else b"\n"
        send({"jsonrpc": "2.0", "id": rid, "result": result}, end)


main()
