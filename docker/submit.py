"""One-shot run submission: submit the app, relay the run's logs, exit with its outcome.

`flwr run --stream` exits 0 however the run ended; a federation that must fail
loudly (CI, `docker compose up --exit-code-from submit`) needs the outcome, so
this asks the SuperLink for the run's final status and exits 0 only if the run
completed.

  APP_DIR          the Flower app to submit (default /app)
  FLWR_CONNECTION  connection name in $FLWR_HOME/config.toml (default "deployment")
  RUN_CONFIG       run-config overrides, e.g. "num-server-rounds=3 min-nodes=3"
  FEDERATION_CONFIG  federation-config overrides for a simulation SuperLink,
                   e.g. "num-supernodes=1000 client-resources-num-cpus=1"
  RUN_DEADLINE     seconds the run may take (default 3600; 0: no deadline). Past
                   it the run is stopped (`flwr stop`) and this exits 1: nothing
                   waits forever, whatever the ServerApp does.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from flowerdock_logging import get_logger

log = get_logger("app.submit")


def prepare_flwr_home() -> None:
    """The flwr CLI reads its connections from $FLWR_HOME/config.toml and writes next to
    it (credentials.yaml). Here $FLWR_HOME is a tmpfs (the root file system is
    read-only), so the connections, mounted read-only at $FLWR_CONFIG, are copied in."""
    source = os.getenv("FLWR_CONFIG")
    home = Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))
    if source and not (home / "config.toml").exists():
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, home / "config.toml")


def flwr_json(*args: str) -> dict:
    """Run a `flwr` command with `--format json` and return its JSON answer."""
    # Plain output from this child: its answer is one (pretty-printed) JSON document.
    env = {**os.environ, "LOG_FORMAT": "console"}
    result = subprocess.run(["flwr", *args, "--format", "json"], capture_output=True, text=True, env=env)
    start = result.stdout.find("{")
    try:
        reply, _ = json.JSONDecoder().raw_decode(result.stdout[start:]) if start >= 0 else (None, 0)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or "success" not in reply:
        raise RuntimeError(f"`flwr {' '.join(args)}` gave no answer (exit {result.returncode}): "
                           f"{(result.stdout + result.stderr).strip()[-2000:]}")
    return reply


def relay_logs(run_id: str, connection: str, deadline: float | None) -> bool:
    """Pass the run's streamed logs on, each line as the `line` of a `run_log` event:
    readable where `make federation` shows this container, and never a second copy
    of the ServerApp's own events (the aggregator stores those once, from the
    ServerApp). False when the deadline passed first."""
    process = subprocess.Popen(["flwr", "log", run_id, connection, "--stream"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace")
    expired = threading.Event()
    timer = threading.Timer(deadline, lambda: (expired.set(), process.kill())) if deadline else None
    if timer:
        timer.start()
    for raw in process.stdout:
        if text := raw.strip():
            try:
                line = json.loads(text)
            except ValueError:
                line = text  # the CLI's own words
            log.info("run_log", run_id=run_id, line=line)
    process.wait()
    if timer:
        timer.cancel()
    return not expired.is_set()


def main() -> int:
    prepare_flwr_home()
    app_dir = os.getenv("APP_DIR") or "/app"
    connection = os.getenv("FLWR_CONNECTION", "deployment")
    run_config = os.getenv("RUN_CONFIG", "")
    federation_config = os.getenv("FEDERATION_CONFIG", "")
    try:
        deadline = float(os.getenv("RUN_DEADLINE") or 3600) or None
    except ValueError:
        raise RuntimeError(f"RUN_DEADLINE={os.getenv('RUN_DEADLINE')!r} is not a number of seconds "
                           "(0: no deadline)") from None
    args = ["run", app_dir, connection] + (["--run-config", run_config] if run_config else [])
    args += ["--federation-config", federation_config] if federation_config else []
    submitted = flwr_json(*args)
    if not submitted.get("success"):
        log.error("run_submit_failed", error=submitted.get("error-message", submitted))
        return 1
    run_id = submitted["run-id"]
    log.info("run_submitted", run_id=run_id, connection=connection, run_config=run_config,
             **({"federation_config": federation_config} if federation_config else {}))

    if not relay_logs(run_id, connection, deadline):
        stopped = flwr_json("stop", run_id, connection).get("success")
        log.error("run_deadline_exceeded", run_id=run_id, deadline_s=deadline, stopped=bool(stopped),
                  hint="raise RUN_DEADLINE if the run needs longer; its logs say where it was")
        return 1

    runs = flwr_json("ls", connection, "--run-id", run_id).get("runs", [])
    status = runs[0].get("status") if runs else "unknown"
    outcome_ok = status == "finished:completed"
    (log.info if outcome_ok else log.error)("run_outcome", run_id=run_id, status=status)
    return 0 if outcome_ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        log.error("run_submit_failed", error=str(exc))
        sys.exit(1)
