"""``transformers serve <folder>`` in a subprocess on a free port of 127.0.0.1: a real
OpenAI-compatible server for the tests and `benchmarks/bench_served.py`."""

from __future__ import annotations

import time

from .openai import ServerError


class TransformersServe:
    """``transformers serve <folder>`` in a subprocess on a free port of 127.0.0.1 (tests, bench).

    `start` waits for ``/health`` (raising `ServerError` with the log's tail if it does not come
    up by ``deadline`` seconds); `stop` terminates it (``kill=True``: SIGKILL, as a crash would).
    A context manager: the server never outlives the block.
    """

    LAUNCH = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; sys.exit(main())"

    def __init__(self, folder, workdir, dtype: str = "float32", deadline: float = 150.0):
        from pathlib import Path

        self.folder, self.workdir, self.dtype, self.deadline = Path(folder), Path(workdir), dtype, deadline
        self.proc = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "TransformersServe":
        import os
        import socket
        import subprocess
        import sys

        import httpx

        hub = self.workdir / "hub"  # /v1/models raises CacheNotFound unless the hub cache folder exists
        hub.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        log_path = self.workdir / f"serve-{self.port}.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub), "TOKENIZERS_PARALLELISM": "false"}
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", self.LAUNCH, "serve", str(self.folder), "--host",
                                          "127.0.0.1", "--port", str(self.port), "--dtype", self.dtype, "--device", "cpu"],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        until = time.time() + self.deadline
        while time.time() < until and self.proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        tail = log_path.read_text(errors="replace")[-3000:]
        raise ServerError(f"transformers serve did not come up on {self.url} within {self.deadline:g} s:\n{tail}")

    def stop(self, kill: bool = False) -> None:
        import signal
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.proc = None

    def __enter__(self) -> "TransformersServe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()



class LlamaServer:
    """llama.cpp's ``llama-server`` (built by ``make llama-server``) on a GGUF file, in a subprocess
    on a free port of 127.0.0.1 (tests, bench), serving it under ``alias``.

    ``slots`` parallel slots share one ``context`` of tokens (``--kv-unified``: without it, ``-np``
    splits the context so each slot holds only ``context / slots``). `start` waits for ``/health``;
    `stop` terminates it (``kill=True``: SIGKILL, as a crash would). A context manager.
    """

    def __init__(self, gguf, workdir, alias: str, context: int = 4096, slots: int = 4, threads: int = 2,
                 binary=None, deadline: float = 120.0, extra: tuple[str, ...] = ()):
        from pathlib import Path

        from .. import paths

        self.gguf, self.workdir, self.alias = Path(gguf), Path(workdir), alias
        self.context, self.slots, self.threads, self.deadline = context, slots, threads, deadline
        self.binary = Path(binary) if binary else paths.ROOT / ".llama" / "bin" / "llama-server"
        self.extra = tuple(extra)  # more arguments, e.g. ("--lora", <file>, "--lora-init-without-apply")
        self.proc = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "LlamaServer":
        import socket
        import subprocess

        import httpx

        if not self.binary.exists():
            raise ServerError(f"{self.binary} is missing: build it with `make llama-server`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        log_path = self.workdir / f"llama-server-{self.port}.log"
        cmd = [str(self.binary), "-m", str(self.gguf), "--alias", self.alias, "-c", str(self.context), "--kv-unified",
               "-np", str(self.slots), "-t", str(self.threads), "--host", "127.0.0.1", "--port", str(self.port),
               "--no-webui", *self.extra]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        until = time.time() + self.deadline
        while time.time() < until and self.proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        tail = log_path.read_text(errors="replace")[-3000:]
        raise ServerError(f"llama-server did not come up on {self.url} within {self.deadline:g} s:\n{tail}")

    stop = TransformersServe.stop
    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop()
