"""Every Flower internal the project relies on, and a check that the installed Flower still has it.

Not listed: Flower's documented API as documented (flwr.app, flwr.serverapp, flwr.clientapp,
flwr.serverapp.strategy). Listed: what a Flower release may move without notice: a private module
or attribute, an undocumented signature, a constant's value, a line of Flower's log or JSON that our
code matches on. Most such moves fail nowhere: a renamed flag is set on nothing, a reworded log
line is never matched, a supervisor waits for a sign that never comes.

  check(*used_by)    what the installed Flower lacks, one line per item, naming who needs it
  require(*used_by)  raises FlowerInternalsMissing with those lines and the installed version

`used_by` narrows both to the items that the files under these repository paths rely on
("app/", "docker/supernode_entrypoint.py"); none: every item (tests/test_flower_internals.py).
Where each runs at start, and how to update this list: docs/flower-upgrades.md.

The kinds of check (flowerdock_logging/reliance.py) cost nothing at start: Text reads a Flower
source file without importing Flower; the others look into a module the process imports anyway.

This lives in flowerdock_logging because that package is installed on the host and in every image
that has Flower, and the FAB's app imports it already. It imports no Flower at import time.
"""

from __future__ import annotations

from flowerdock_logging.reliance import Attribute, Parameter, ProtoField, Reliance, Text, Value, flower_version


class FlowerInternalsMissing(RuntimeError):
    """The installed Flower lacks what the project relies on; the message says what, and who needs it."""


ERROR_REASON = "str(type(ex)) + \":<'\""  # a reason reads "<class 'module.Error'>:<'message'>"
FLEET_LOOP_GAVE_UP = ("SSL/TLS handshake error detected", "Giving up reconnection")

# Grouped by the file that relies on each; `why` says what breaks, silently, when it moves.
RELIED_ON: tuple[Reliance, ...] = (
    # --- flowerdock_logging: Flower's own output as JSON Lines --------------------------------------
    Attribute("flwr.supercore.logger:console_handler", used_by="flowerdock_logging/flower_hooks.py",
              why="its formatter and stream are replaced, so that Flower's records print as JSON lines"),
    Value("flwr.supercore.logger:LOGGER_NAME", "flwr",
          used_by="flowerdock_logging/flower_hooks.py scripts/direct_federation.py",
          why="the logger named 'flwr' is kept from propagating (each record printed once), and quieted"),
    Text("superlink/cli/flower_superlink.py", "log_config=get_uvicorn_log_config(",
         used_by="flowerdock_logging/flower_hooks.py",
         why="uvicorn applies Flower's logging config in Config.configure_logging, where the SuperLink's "
             "HTTP log handlers are taken over; configured elsewhere, they would print plain text"),
    Attribute("flwr.supercore.superexec.plugin.base_exec_plugin:AutoExecPlugin.suppress_output",
              used_by="flowerdock_logging/superexec_output.py",
              why="set to False so that a SuperExec passes its ServerApp's output to the container's log"),
    Text("supercore/superexec/plugin/base_exec_plugin.py", "self.suppress_output",
         used_by="flowerdock_logging/superexec_output.py",
         why="the flag must still be what decides: else the ServerApp's lines go to /dev/null again"),

    # --- app/: the ServerApp ----------------------------------------------------------------------
    *(Attribute(f"flwr.common.constant:ErrorCode.{code}", used_by=users,
                why="a failed or missing reply's error code becomes the client_round line's reason")
      for code, users in (("LOAD_CLIENT_APP_EXCEPTION", "app/round_log.py"),
                          ("CLIENT_APP_RAISED_EXCEPTION", "app/round_log.py scripts/direct_federation.py"),
                          ("CLIENT_APP_CRASHED", "app/round_log.py"), ("INVALID_FAB", "app/round_log.py"),
                          ("MOD_FAILED_PRECONDITION", "app/round_log.py"),
                          ("MESSAGE_UNAVAILABLE", "app/round_log.py"),
                          ("REPLY_MESSAGE_UNAVAILABLE", "app/round_log.py app/quorum.py"),
                          ("NODE_UNAVAILABLE", "app/round_log.py"))),
    Text("supernode/runtime/run_clientapp.py", ERROR_REASON,
         used_by="app/round_log.py scripts/direct_federation.py",
         why="a ClientApp's exception reaches the server as \"<class '...'>:<'...'>\": round_log finds "
             "app.site_data.SiteDataError in it (site_data_invalid); direct_federation imitates it"),
    Text("server/superlink/fleet/vce/vce_api.py", ERROR_REASON, used_by="app/round_log.py app/strategy.py",
         why="in the simulation, a reason that starts with \"<class 'ray.exceptions.ActorDiedError'>\" is "
             "a lost Ray node (ray_actor_died), which stops the run"),
    Parameter("flwr.serverapp:Grid.push_messages", "messages", used_by="app/quorum.py scripts/direct_federation.py",
              why="QuorumGrid pushes the round's messages itself, then pulls the replies"),
    Parameter("flwr.serverapp:Grid.pull_messages", "message_ids", used_by="app/quorum.py scripts/direct_federation.py",
              why="QuorumGrid pulls the pending replies every poll-interval"),
    Parameter("flwr.serverapp:Grid.send_and_receive", "messages timeout", used_by="app/quorum.py",
              why="QuorumGrid replaces it, with the same signature"),
    Attribute("flwr.serverapp:Grid.get_node_ids", used_by="app/quorum.py app/strategy.py",
              why="wait_for_nodes polls it; _Connected answers it with a snapshot"),
    Text("serverapp/strategy/strategy.py", "grid.send_and_receive(", used_by="app/quorum.py",
         why="Strategy.start sends each round through send_and_receive, the one method QuorumGrid bounds "
             "(it passes the others through): a start() that pushed and pulled itself would wait unbounded"),
    Text("serverapp/strategy/strategy_utils.py", "grid.get_node_ids()", used_by="app/strategy.py",
         why="sample_nodes counts the connected nodes with it, so the snapshot of _Connected keeps "
             "Flower's unbounded wait for min_available_nodes from ever waiting"),
    Text("superlink/grid/http_grid.py", "except httpx.HTTPStatusError", used_by="app/quorum.py",
         why="a pull the SuperLink answers with an HTTP error raises httpx.HTTPStatusError, which "
             "QuorumGrid logs and retries (5xx) until the round's wait ends"),
    Text("serverapp/strategy/fedavg.py", ("self.min_available_nodes = ", "self.weighted_by_key = "),
         used_by="app/strategy.py",
         why="ScreenedStrategy reads the base strategy's quorum and example-count key by these names"),
    Parameter("flwr.serverapp.strategy:FedAdagrad", "eta", used_by="app/aggregators.py",
              why="AGGREGATORS passes server-learning-rate as this keyword"),
    Parameter("flwr.serverapp.strategy:FedTrimmedAvg", "beta", used_by="app/aggregators.py",
              why="AGGREGATORS passes trimmed-beta as this keyword"),
    *(Parameter(f"flwr.serverapp.strategy:{name}", parameters, used_by="app/aggregators.py",
                why="AGGREGATORS passes num-malicious (and krum-select) as these keywords")
      for name, parameters in (("Krum", "num_malicious_nodes"), ("Bulyan", "num_malicious_nodes"),
                               ("MultiKrum", "num_malicious_nodes num_nodes_to_select"))),
    Value("flwr.common.constant:SType.NUMPY", "numpy.ndarray", used_by="app/screening.py",
          why="NUMPY_STYPE: the one array encoding screening accepts"),
    Text("app/message/array.py", "np.save(buffer, ndarray, allow_pickle=False)", used_by="app/screening.py",
         why="screening reads an array's bytes as a .npy file (its header checked before np.load)"),

    # --- docker/: the SuperNode container ---------------------------------------------------------
    *(Text("supercore/retry/http_retry.py", sign, used_by="docker/supernode_processes.py",
           why="GAVE_UP: the sign that Flower's Fleet loop has given up for good; the supervisor then "
               "restarts the SuperNode (else it lives on, silent)") for sign in FLEET_LOOP_GAVE_UP),
    Text("supercore/error/catalog.py", "Failed to activate SuperNode", used_by="docker/supernode_processes.py",
         why="NOT_ACTIVATED: the sign of a key the SuperLink refused (supernode_not_activated)"),
    Text("supercore/constant.py", ('UVICORN_DEFAULT_HOST = "127.0.0.1"', "SUPERNODE_UVICORN_DEFAULT_PORT = 9094"),
         used_by="docker/supernode_processes.py docker/Dockerfile",
         why="RUNTIME_API: flower-supernode is given no --host/--port; the SuperExec and the health probe "
             "reach its Runtime API at Flower's default 127.0.0.1:9094, on the container's loopback only"),
    Text("supercore/cli/flower_superexec.py", "default=ExecutorType.SUBPROCESS",
         used_by="docker/supernode_processes.py docker/flwr-clientapp",
         why="the SuperExec starts each ClientApp as a process by its command's name, so the image's warm "
             "flwr-clientapp, first on PATH, is the one it starts"),
    Text("supercore/constant.py", 'TaskType.CLIENT_APP: "flwr-clientapp"',
         used_by="docker/supernode_processes.py docker/flwr-clientapp",
         why="the command the SuperExec starts for a ClientApp: the name the warm launcher is installed as"),
    Text("supercore/routers/health/router.py", '@router.get("/health"',
         used_by="docker/supernode_entrypoint.py docker/healthcheck.py docker/gateway/nginx.conf.template",
         why="the entrypoint's TLS check, every image's health probe and the gateway ask GET /health"),
    Text("supernode/main.py", "include_router(health.router)",
         used_by="docker/supernode_entrypoint.py docker/healthcheck.py",
         why="the SuperNode's Runtime API serves /health (HEALTHCHECK_URL supernode://127.0.0.1:9094/health)"),
    Text("superlink/main.py", "include_router(health.router)",
         used_by="docker/healthcheck.py docker/gateway/nginx.conf.template",
         why="the SuperLink serves /health: its image's probe, the SuperNodes' probes, the gateway"),
    Attribute("flwr.supernode.cli.flwr_clientapp:flwr_clientapp", used_by="docker/clientapp_forkserver.py",
              why="TARGET: what a forked ClientApp process runs, and a module PRELOAD imports"),
    Text("supernode/cli/flwr_clientapp.py", "def flwr_clientapp() -> None:", used_by="docker/clientapp_forkserver.py",
         why="TARGET is called with no arguments: it must read them from sys.argv, as the console script does"),

    # --- docker/: the simulation on a Ray cluster ---------------------------------------------------
    Value("flwr.common.constant:APP_DIR", "apps", used_by="docker/fab_runtime_env.py",
          why="APPS: FABs are unpacked in $FLWR_HOME/apps/, where the hook finds the run's folder on sys.path"),
    Text("common/config.py", '/ f"{publisher}.{project_name}.{fab_version}.{fab_hash[:FAB_HASH_TRUNCATION]}"',
         used_by="docker/fab_runtime_env.py",
         why="a FAB's folder lies directly in apps/: the hook takes the one sys.path entry whose parent is apps/"),
    Text("server/superlink/fleet/vce/backend/raybackend.py", 'runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}',
         used_by="docker/fab_runtime_env.py docker/ray_node.py",
         why="Flower's ray.init passes only PYTHONPATH (the hook adds the FAB as working_dir) and no address "
             "(RAY_ADDRESS, set by ray_node.py, picks the cluster)"),
    Text("simulation/ray_transport/ray_actor.py", "class ClientAppActor(", used_by="docker/ray_cluster.py",
         why="ACTOR_CLASS: the Ray actors counted as ClientApps"),

    # --- docker/: the SuperLink's helpers -----------------------------------------------------------
    Attribute("flwr.cli.flower_config:read_superlink_connection", used_by="docker/register_supernodes.py",
              why="reads the connection to the Control API from $FLWR_HOME/config.toml"),
    Attribute("flwr.cli.utils:init_http_client_from_connection", used_by="docker/register_supernodes.py",
              why="Flower's own Control API client: the CLI lists nodes without their keys"),
    *(Attribute(f"flwr.supercore.control.control_http_client:ControlHttpClient.{method}",
                used_by="docker/register_supernodes.py", why="the client's calls that sync the registered keys")
      for method in ("ListNodes", "RegisterNode", "UnregisterNode", "close")),
    Attribute("flwr.proto.control_pb2:ListNodesRequest", used_by="docker/register_supernodes.py",
              why="asks for every node with its key"),
    ProtoField("flwr.proto.control_pb2:ListNodesResponse", "nodes_info", used_by="docker/register_supernodes.py",
               why="the registered nodes"),
    ProtoField("flwr.proto.node_pb2:NodeInfo", "public_key status node_id", used_by="docker/register_supernodes.py",
               why="a node's key, whether it is unregistered, and its ID to unregister it by"),
    ProtoField("flwr.proto.control_pb2:RegisterNodeRequest", "public_key name", used_by="docker/register_supernodes.py",
               why="registers a key under its file's name"),
    ProtoField("flwr.proto.control_pb2:RegisterNodeResponse", "node_id", used_by="docker/register_supernodes.py",
               why="logged as supernode_registered's node_id"),
    ProtoField("flwr.proto.control_pb2:UnregisterNodeRequest", "node_id", used_by="docker/register_supernodes.py",
               why="unregisters a revoked node"),
    Attribute("flwr.supercore.constant:NodeStatus.UNREGISTERED", used_by="docker/register_supernodes.py",
              why="an unregistered node's key may be registered again"),
    Attribute("flwr.supercore.primitives.asymmetric:public_key_to_bytes", used_by="docker/register_supernodes.py",
              why="keys are compared as Flower stores them"),
    Text("superlink/servicer/control/control_handlers.py",
         ('f"{FLWR_SUPERGRID_API_URL}/hub/fetch-fab"', 'url, "fab_url"'),
         used_by="docker/app_registry.py",
         why="the one app hub call a SuperLink makes for `flwr run @publisher/app==x.y.z`, and the answer's "
             "field it downloads the FAB from"),
    Text("supercore/utils.py", ('"app_id": app_id', '"app_version": app_version', 'data["verifications"]',
                                '"available_app_versions"'),
         used_by="docker/app_registry.py",
         why="the request's fields and the answers' (the signatures; a 404's list of versions)"),
    Value("flwr.supercore.constant:APP_ID_PATTERN", r"^@[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
          used_by="docker/app_registry.py", why="APP_ID must accept what Flower lets through to the hub"),
    Value("flwr.supercore.constant:APP_VERSION_PATTERN", r"^\d+\.\d+\.\d+$", used_by="docker/app_registry.py",
          why="VERSION is the same pattern"),
    Text("cli/run/run.py", ('"success": ', '"run-id": '), used_by="docker/submit.py",
         why="`flwr run --format json`: whether it was submitted, and the run's ID"),
    Text("supercore/logger.py", '"error-message"', used_by="docker/submit.py",
         why="a failed `flwr ... --format json` says why in this field (run_submit_failed)"),
    Text("cli/ls.py", ('"runs": runs_list', '"status": row.status_text', '"pending-at"'),
         used_by="docker/submit.py scripts/bench_superlink.py",
         why="`flwr ls --format json`: the run's final status (and when it was submitted)"),
    Text("cli/run_utils.py", 'f"{run.status.status}:{run.status.sub_status}"', used_by="docker/submit.py",
         why="a status reads \"finished:completed\" when the run succeeded: submit exits 0 only then"),
    Value("flwr.common.constant:Status.FINISHED", "finished", used_by="docker/submit.py scripts/bench_superlink.py",
          why="the first half of \"finished:completed\""),
    Value("flwr.common.constant:SubStatus.COMPLETED", "completed",
          used_by="docker/submit.py scripts/bench_superlink.py",
          why="the second half of \"finished:completed\""),

    # --- docker/gateway: the SuperLink's public face (its image has no Flower: checked by the tests) ---
    Text("common/constant.py", '"FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE", "5242880"', used_by="docker/gateway/settings.py",
         why="FLOWER_CHUNK: FLEET_MAX_BODY must fit an array chunk of 5 MiB"),
    Value("flwr.common.constant:FAB_MAX_SIZE", 10 * 1024 * 1024, used_by="docker/gateway/settings.py",
          why="FLOWER_FAB: CONTROL_MAX_BODY must fit the largest FAB `flwr run` sends"),
    Text("supercore/retry/http_retry.py", "httpx.codes.SERVICE_UNAVAILABLE,",
         used_by="docker/gateway/nginx.conf.template",
         why="_RETRYABLE_STATUS_CODES: the gateway answers a SuperNode it refuses with 503, which Flower retries "
             "with its backoff (a 429 would end the SuperNode's loop)"),
    Text("superlink/routers/fleet/router.py", ('prefix="/v1/fleet"', '@router.post("/push-object")',
                                               '@router.post("/send-node-heartbeat")'),
         used_by="docker/gateway/nginx.conf.template",
         why="the Fleet API the gateway serves, the model-chunk upload it sizes apart, and the heartbeat it "
             "never sheds"),
    Value("flwr.common.constant:HEARTBEAT_PATIENCE", 2, used_by="docker/gateway/nginx.conf.template",
          why="a node whose heartbeats fail for 2 intervals is offline: the gateway never sheds heartbeats"),
    Text("superlink/routers/control/router.py", ('prefix="/v1/control"', '@router.post("/start-run")',
                                                 '@router.post("/stream-logs")', '@router.post("/stream-run-events")'),
         used_by="docker/gateway/nginx.conf.template",
         why="the Control API routes the gateway sizes (the FAB upload) or keeps open (streamed logs)"),

    # --- certs/: the keys Flower reads -------------------------------------------------------------
    Text("supernode/cli/flower_supernode.py", ("load_ssh_private_key(", "yaml.safe_load(f)", "load_ssh_public_key("),
         used_by="certs/certlib/nodes.py certs/certlib/publisher.py",
         why="a SuperNode's key is read in OpenSSH format, and trusted-entities.yaml is a YAML map of "
             "key ID to OpenSSH public key"),
    Text("supernode/start_client_internal.py", ('verif["signed_at"]', 'decode_base64url(verif["signature"])'),
         used_by="scripts/publish_app.py",
         why="a FAB's verification entry: when it was signed, and the signature as unpadded base64url"),
    Text("superlink/servicer/control/control_handlers.py", 'item["public_key_id"]', used_by="scripts/publish_app.py",
         why="a verification entry names its key by public_key_id (certs/certlib/publisher.py public_key_id)"),

    # --- scripts/ ----------------------------------------------------------------------------------
    Parameter("flwr.supernode.fleet_http_connection:http_request_response",
              "server_address insecure root_certificates authentication_keys max_retries max_wait_time",
              used_by="scripts/fake_fleet/node.py",
              why="each fake node's connection: activation, heartbeats, and the Fleet calls it yields"),
    Text("supernode/fleet_http_connection.py",
         ("                receive,\n                send,\n                get_run,\n                get_fab,\n"
          "                pull_object,\n                push_object,\n                confirm_message_received,",
          "FleetHttpClient.from_server_address(", "flwr_exit(", "log(ERROR, exc)"),
         used_by="scripts/fake_fleet/node.py",
         why="the order of the calls it yields (fake nodes unpack them by position); the module-level "
             "FleetHttpClient and flwr_exit that a fake node's process swaps for a timed client and an "
             "exception; an error inside the connection is logged and swallowed"),
    Attribute("flwr.supernode.fleet_http_connection:FleetHttpClient", used_by="scripts/fake_fleet/node.py",
              why="replaced per process by a subclass that times every request"),
    Attribute("flwr.supernode.fleet_http_connection:flwr_exit", used_by="scripts/fake_fleet/node.py",
              why="replaced per process: a node that cannot activate must not end its process's other nodes"),
    Attribute("flwr.supernode.fleet_http_client:FleetHttpClient", used_by="scripts/fake_fleet/node.py",
              why="the class the timed client extends"),
    Parameter("flwr.supercore.protobuf.client:ProtobufClient._send", "context stream",
              used_by="scripts/fake_fleet/node.py", why="the one method every Fleet request goes through: timed there"),
    Parameter("flwr.common.config:get_fused_config_from_fab", "fab_file run", used_by="scripts/fake_fleet/node.py",
              why="the run config a node reads from the run and its FAB, as Flower's SuperNode does"),
    Parameter("flwr.supercore.inflatable.inflatable_utils:pull_and_inflate_object_from_tree",
              "object_tree pull_object_fn confirm_object_received_fn return_type", used_by="scripts/fake_fleet/node.py",
              why="pulls a message's objects, confirms receipt and inflates it, as Flower's ClientApp runner does"),
    Parameter("flwr.supercore.inflatable.inflatable_utils:push_objects", "objects push_object_fn object_ids_to_push",
              used_by="scripts/fake_fleet/node.py", why="pushes a reply's objects"),
    *(Attribute(f"flwr.supercore.inflatable.inflatable_object:{name}", used_by="scripts/fake_fleet/node.py",
                why="a reply's object tree and objects, as Flower's ClientApp runner builds them")
      for name in ("get_all_nested_objects", "get_object_tree", "no_object_id_recompute")),
    Attribute("flwr.supercore.run:RunNotRunningException", used_by="scripts/fake_fleet/node.py",
              why="a message of a run that ended: ignored, as Flower's SuperNode does"),
    Attribute("flwr.cli.build:build_fab_from_disk", used_by="scripts/publish_app.py",
              why="builds the FAB as `flwr run .` would"),
    Attribute("flwr.cli.config_utils:get_fab_metadata", used_by="scripts/publish_app.py",
              why="the FAB's publisher/app and version: its place in the registry"),
    Parameter("flwr.supercore.primitives.asymmetric_ed25519:create_message_to_sign", "fab_digest timestamp",
              used_by="scripts/publish_app.py", why="the bytes a FAB signature signs"),
    *(Attribute(f"flwr.supercore.task_identity:TaskIdentity.{name}",
                used_by="scripts/direct_federation.py scripts/bench_metadata.py scripts/bench_faults.py",
                why="set as Flower sets them in a ServerApp's process: Message() reads them")
      for name in ("run_id", "node_id", "task_id")),
    Attribute("flwr.common.constant:SUPERLINK_NODE_ID", used_by="scripts/direct_federation.py",
              why="the node ID a ServerApp's task is given"),
    Text("app/metadata.py", 'self.__dict__["_message_id"]', used_by="scripts/direct_federation.py",
         why="DirectGrid sets a pushed message's ID where Flower's own Grid does"),
    Text("serverapp/strategy/strategy.py", '"[ROUND %s/%s]"', used_by="scripts/bench_federation.py",
         why="round_times(): a round starts at this line (bench_ray, bench_model_size use it too)"),
    Text("supernode/start_client_internal.py", ('"Receiving: %s message (ID: %s)"', '"Sent successfully"'),
         used_by="scripts/bench_round.py", why="where a message's time goes: pulled, and its reply sent"),
    Text("supernode/cli/flwr_clientapp.py", '"Start `flwr-clientapp` process"', used_by="scripts/bench_round.py",
         why="where a message's time goes: its ClientApp process started"),
    Text("cli/constant.py", ('"FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39091"', '"FLWR_LOCAL_CONTROL_API_PORT"'),
         used_by="scripts/local_superlink.py", why="the port `flwr run` finds its local SuperLink on, and the "
                                                   "settings that move it"),
    Text("cli/local_superlink.py", ('/ "local-superlink"', "**get_popen_detach_kwargs()"),
         used_by="scripts/local_superlink.py",
         why="this checkout's local SuperLink is told apart by its database under $FLWR_HOME/local-superlink/, "
             "and stopped with the session Flower starts it in"),
    Text("supercore/utils.py", '"start_new_session": True', used_by="scripts/local_superlink.py",
         why="the local SuperLink has a session of its own (stop() ends that session)"),
    Text("cli/supernode/ls.py", '"nodes": nodes_list', used_by="scripts/bench_superlink.py",
         why="`flwr supernode list --format json`: the nodes online"),
)


def relied_on(*used_by: str) -> list[Reliance]:
    """The items that files under these paths rely on (all of them when none is given)."""
    return [item for item in RELIED_ON if not used_by or any(file.startswith(used_by) for file in item.files)]


def check(*used_by: str) -> list[str]:
    """What the installed Flower lacks: one line per item, with the files that need it and why."""
    return [f"{item.what}: {problem}\n    needed by {', '.join(item.files)}: {item.why}"
            for item in relied_on(*used_by) if (problem := item.problem()) is not None]


def require(*used_by: str) -> None:
    """Raise FlowerInternalsMissing, naming the installed Flower and each missing item, if any."""
    missing = check(*used_by)
    if missing:
        raise FlowerInternalsMissing(
            f"Flower {flower_version()} is installed, but {len(missing)} thing(s) this project relies on "
            f"changed (flowerdock_logging/flower_internals.py; what to do: docs/flower-upgrades.md):\n  - "
            + "\n  - ".join(missing))
