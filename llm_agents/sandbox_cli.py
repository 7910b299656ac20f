"""`edgeloop sandbox`: check the blueprint sandbox on this machine, or serve it to the agent.

    $ edgeloop sandbox check                 # can step code be confined here? how?
    $ edgeloop sandbox serve --socket /run/edgeloop-sandbox/sandbox.sock --group edgeloop
"""
from __future__ import annotations

import logging
import signal
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


@click.group()
def sandbox() -> None:
    """The blueprint sandbox: check it here, or serve it to the agent over a Unix socket."""


@sandbox.command()
@click.option("--socket", "socket_path", default=None, envvar="EDGELOOP_SANDBOX_SOCKET",
              help="Check the sandbox service at this socket instead of a local sandbox.")
def check(socket_path: str | None) -> None:
    """Run one probe step and print what confined it (uid, capabilities, filters, namespaces).

    Exits 1 when step code cannot be confined: the agent would then only label."""
    from llm_agents.blueprints.sandbox import SandboxLimits, StepSource
    from llm_agents.blueprints.sandbox_service import make_sandbox

    sb = make_sandbox(socket_path or "", SandboxLimits(wall_s=20))
    res = sb.run([StepSource("probe", "def probe():\n    return {'ok': 1}", [], ["ok"])], final=("ok",))
    if not res.ok:
        console.print(f"[red]the sandbox cannot confine step code ({sb.mode}):[/] {escape(res.problem())}")
        raise SystemExit(1)
    iso = res.isolation
    console.print(f"[green]confined[/] ({sb.mode}) in {res.seconds * 1e3:.0f} ms: uid {iso.get('uid')} "
                  f"(host uid {iso.get('host_uid')}), capabilities {iso.get('cap_eff')}, "
                  f"no_new_privs {iso.get('no_new_privs')}, seccomp filters {iso.get('seccomp_filters')}, "
                  f"namespaces net pid ipc mount, root {escape(str(iso.get('minimal_root')))}, "
                  f"cgroup {escape(str(iso.get('cgroup')))}")


@sandbox.command()
@click.option("--socket", "socket_path", required=True, type=click.Path(path_type=Path),
              envvar="EDGELOOP_SANDBOX_SOCKET", help="Unix socket to listen on (its directory must exist).")
@click.option("--group", default=None, help="Group (name or gid) that may connect; the socket is mode 0660.")
@click.option("--parallel", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Programs run at once; more clients wait.")
@click.option("--max-view-mb", type=click.IntRange(1, 4096), default=256, show_default=True,
              help="Largest twin view a client may send.")
@click.option("--max-wall-s", type=click.FloatRange(1, 600), default=30, show_default=True,
              help="Most wall-clock seconds a client may ask for one program.")
@click.option("--max-memory-mb", type=click.IntRange(64, 65536), default=1024, show_default=True,
              help="Most address space a client may ask for.")
@click.option("--run-as", type=click.IntRange(1, 2**31 - 1), default=None,
              help="Started as root: run bubblewrap as this unprivileged uid, in user-namespace mode "
                   "(where systemd's User= is not available, e.g. a root container).")
def serve(socket_path: Path, group: str | None, parallel: int, max_view_mb: int, max_wall_s: float,
          max_memory_mb: int, run_as: int | None) -> None:
    """Serve the sandbox to the agent: run each program it sends in bubblewrap, answer the result.

    Checks the sandbox once at start and refuses to serve if it cannot confine code here.
    Every limit a client asks for is clamped to these maxima. Stops on SIGTERM or Ctrl-C."""
    from llm_agents.blueprints.sandbox import Sandbox, SandboxLimits, StepSource
    from llm_agents.blueprints.sandbox_service import SandboxServer

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    most = SandboxLimits(wall_s=max_wall_s, memory_bytes=max_memory_mb << 20)
    try:
        sb = Sandbox(most, run_as=run_as)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    probe = sb.run([StepSource("probe", "def probe():\n    return {'ok': 1}", [], ["ok"])], final=("ok",))
    if not probe.ok:
        raise click.ClickException(f"the sandbox cannot confine step code here: {probe.problem()}")
    server = SandboxServer(socket_path, sb, group=group, parallel=parallel, max_view_bytes=max_view_mb << 20)
    signal.signal(signal.SIGTERM, lambda *_: _stop(server))
    console.print(f"sandbox service on {socket_path} ({sb.mode} mode, {parallel} at a time, "
                  f"at most {max_wall_s:g} s and {max_memory_mb} MB per program); uid {probe.isolation.get('uid')} "
                  f"inside, {probe.isolation.get('seccomp_filters')} seccomp filters")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        socket_path.unlink(missing_ok=True)
    console.print(f"sandbox service stopped after {server.runs} runs")


def _stop(server: object) -> None:
    import threading

    threading.Thread(target=server.shutdown, daemon=True).start()  # type: ignore[attr-defined]
