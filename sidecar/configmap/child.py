"""The template child: ``python -m sidecar.configmap.child``, one per template of the user's.

It compiles and renders the template in the sandbox under limits the kernel enforces: its
address space (RLIMIT_AS) and, per request, MAX_RENDER_SECONDS more CPU time (RLIMIT_CPU).
"""

from __future__ import annotations

import resource
import signal
import sys
from typing import TYPE_CHECKING

from sidecar.config import IGNORED_SIGNALS
from sidecar.configmap.protocol import Pipe, page_data
from sidecar.configmap.sandbox import SandboxedTemplate, compile_template
from sidecar.page.render import TemplateError

if TYPE_CHECKING:
    from typing import Any

# The child's whole address space: ~26 MiB after its imports, so ~70 MiB for a render; the
# sidecar container's memory limit (160 Mi) holds the sidecar and a child at this bound.
MEMORY_LIMIT = 96 * 1024 * 1024
# What one render (or compile) of a template may cost, in seconds of CPU. The packaged page
# at 10,000 members renders in ~20 ms.
MAX_RENDER_SECONDS = 3.0


def limit_cpu(seconds: float) -> None:
    """Let this process use ``seconds`` more CPU time from now; SIGXCPU ends it after that."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(used + seconds) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def answer(
    template: SandboxedTemplate | None, request: dict[str, Any]
) -> tuple[SandboxedTemplate | None, dict[str, Any]]:
    """The template after request, and the answer to it."""
    try:
        if request.get("op") == "compile":
            return compile_template(request["source"], request["origin"]), {"ok": True}
        if template is None:
            return None, {"error": {"file": "", "line": None, "reason": "no template compiled"}}
        data = page_data(request)
        return template, {"html": template.render_html(data, request["fields"])}
    except TemplateError as exc:
        return template, {"error": exc.fields()}


def serve(pipe: Pipe) -> None:
    """Answer requests until the parent closes the pipe, each within MAX_RENDER_SECONDS of CPU."""
    template: SandboxedTemplate | None = None
    while True:
        try:
            request = pipe.receive()
        except EOFError:
            return
        limit_cpu(MAX_RENDER_SECONDS)
        template, reply = answer(template, request)
        pipe.send(reply)


def main() -> None:
    """Bound memory, let signals through again, and serve requests until EOF."""
    # The sidecar blocks SIGTERM and friends in all its threads, and a child inherits that;
    # those the sidecar ignores, it ignores too.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for signum in IGNORED_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    serve(Pipe(sys.stdin.buffer, sys.stdout.buffer))


if __name__ == "__main__":
    main()
