"""A large file through the local stack, next to plain boto3 on the same moto, same run.

A local stack (``sotto local up``, default rate limits) runs in a child
process; two profiles are enrolled through the CLI. ``sotto send ben --file``
(encrypt while uploading to presigned multipart URLs) and ``sotto files get``
(download, decrypt, verify, place) each run as a fresh process, timed with
their peak RSS from ``wait4``. The baseline is boto3's ``upload_file`` and
``download_file`` of the same plaintext bytes to the same moto bucket, run in
a child process too (so its peak RSS is its own). Issue 11's goals:
throughput at least 0.5x the baseline and a peak RSS of at most 100 MB.

``SOTTO_BENCH_FILE_MB`` sets the size (default 2048 MiB).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._cli_stack import cli_stack
from ._report import table

SIZE_MB = int(os.environ.get("SOTTO_BENCH_FILE_MB", "2048"))
PASSPHRASE = "bench passphrase, long enough"
MIB = 1024 * 1024
RSS_GOAL_MB = 100
RATIO_GOAL = 0.5

_BOTO3 = """
import sys, boto3
from boto3.s3.transfer import TransferConfig
endpoint, bucket, action, path = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="local", aws_secret_access_key="local-secret-not-a-real-key")
config = TransferConfig()
if action == "upload":
    s3.upload_file(path, bucket, "bench/baseline", Config=config)
else:
    s3.download_file(bucket, "bench/baseline", path, Config=config)
    s3.delete_object(Bucket=bucket, Key="bench/baseline")
"""


def _run(env: dict[str, str], args: list[str]) -> tuple[float, float, str, str]:
    """Seconds, peak RSS in MB (wait4), stdout and stderr of one child process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(args, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:4])} failed: {err.read().decode()[-2000:]}")
        return elapsed, usage.ru_maxrss / 1024, out.read().decode(), err.read().decode()


def _cli(env: dict[str, str], *args: str) -> str:
    return _run(env, [sys.executable, "-m", "sotto.cli", *args])[2]


# Besides the whole process's peak, the peak of the transfer alone: the probe
# resets the kernel's high-water mark (/proc/self/clear_refs) as the transfer
# starts, so imports and the keystore's Argon2id are not counted in it.
_PROBE = """
import sys
from pathlib import Path
from sotto.client import messenger
def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
def wrap(method):
    def run(*args, **kwargs):
        Path("/proc/self/clear_refs").write_text("5")
        try:
            return method(*args, **kwargs)
        finally:
            sys.stderr.write(f"transfer_hwm_kib={hwm()}\\n")
    return run
messenger.Messenger.send_file = wrap(messenger.Messenger.send_file)
messenger.Messenger.download = wrap(messenger.Messenger.download)
from sotto.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _transfer(env: dict[str, str], *args: str) -> tuple[float, float, float]:
    """Seconds, whole-process peak RSS and the transfer's own peak RSS (MB)."""
    elapsed, peak, _out, err = _run(env, [sys.executable, "-c", _PROBE, *args])
    transfer = int(err.rsplit("transfer_hwm_kib=", 1)[1].split()[0]) / 1024
    return elapsed, peak, transfer


def _make(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    with path.open("wb") as out:
        for index in range(size // MIB):
            # Distinct blocks (a counter in each) without paying for urandom per MiB.
            chunk = index.to_bytes(8, "big") + block[8:]
            out.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    size = SIZE_MB * MIB
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "SOTTO_HOME": str(root / "home"),
            "SOTTO_PASSPHRASE": PASSPHRASE,
        }
        source = root / "payload.bin"
        expected = _make(source, size)
        stack_dir = root / "stack"
        with cli_stack(env, stack_dir) as endpoints:
            network = endpoints["default_network"]
            server = str(stack_dir)
            for name in ("ann", "ben"):
                out = _cli(env, "admin", "--server", server, "--json", "invite",
                                 network["network_id"], name)  # fmt: skip
                code = json.loads(out)["code"]
                _cli(env, "enroll", "--server", server, "--code", code, "--profile", name)
            ben = json.loads(_cli(env, "whoami", "--profile", "ben", "--json"))["user_id"]
            _, whoami_rss, _, _ = _run(
                env, [sys.executable, "-m", "sotto.cli", "whoami", "--profile", "ann"]
            )

            up_s, up_rss, up_own = _transfer(env, "send", ben, "--file", str(source),
                                             "--profile", "ann", "--json")  # fmt: skip
            out = _cli(env, "listen", "--once", "--json", "--profile", "ben")
            message_id = next(
                json.loads(line)["message_id"]
                for line in out.splitlines()
                if line.startswith("{") and "file" in json.loads(line)
            )
            received = root / "received.bin"
            down_s, down_rss, down_own = _transfer(env, "files", "get", message_id, "--out",
                                                   str(received), "--profile", "ben",
                                                   "--json")  # fmt: skip
            if _sha256(received) != expected:
                raise RuntimeError("the received file differs from the one sent")
            received.unlink()

            bucket = endpoints["resources"]["buckets"]["AttachmentsBucket"]
            boto = [sys.executable, "-c", _BOTO3, endpoints["aws"], bucket]
            base_up_s, base_up_rss, _, _ = _run(env, [*boto, "upload", str(source)])
            base_down_s, base_down_rss, _, _ = _run(env, [*boto, "download", str(received)])

    mb = size / 1e6
    rows = [
        ["sotto send --file (encrypt + upload)", up_s, mb / up_s, up_rss, up_own],
        ["boto3 upload_file (plaintext)", base_up_s, mb / base_up_s, base_up_rss, "-"],
        ["sotto files get (download + verify)", down_s, mb / down_s, down_rss, down_own],
        ["boto3 download_file (plaintext)", base_down_s, mb / base_down_s, base_down_rss, "-"],
        ["sotto whoami (imports + keystore KDF)", "-", "-", whoami_rss, "-"],
    ]
    table(
        f"A {SIZE_MB} MiB file through the local stack vs plain boto3, same moto, one run",
        ["process", "seconds", "MB/s", "peak RSS MB", "transfer peak MB"],
        rows,
    )
    up_ratio, down_ratio = base_up_s / up_s, base_down_s / down_s
    print(
        f"   throughput vs boto3: upload {up_ratio:.2f}x, download {down_ratio:.2f}x "
        f"(goal >= {RATIO_GOAL}x); transfer peak RSS sender {up_own:.0f} MB, receiver "
        f"{down_own:.0f} MB (goal <= {RSS_GOAL_MB} MB); whole processes {up_rss:.0f} and "
        f"{down_rss:.0f} MB (a whoami, imports and keystore only: {whoami_rss:.0f} MB)"
    )


if __name__ == "__main__":
    main()
