"""The ``vk-fargate`` command line.

``dev`` manages the local cluster the demo and tests run against (like ``kind``):
``dev up`` starts it in the background and returns (``--aws``: with a fake AWS, moto's
server on loopback, whose VPC gives pods their ENIs), ``dev status`` describes it,
``dev down`` stops it, ``dev build`` builds the control-plane binaries and CoreDNS once
per machine.
``cost`` prices a what-if or the running Fargate pods (``vk_fargate.costcli``).
Errors are printed as one line naming the failed step and its log; exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vk_fargate import __version__, app, costcli, errors, memory, profilecli, settings
from vk_fargate.devcluster import binaries, clusterdns, coredns, demo, restart, stack, state
from vk_fargate.fleetd import config as fleet_config
from vk_fargate.fleetd import server


def _say(line: str) -> None:
    print(f" • {line}", flush=True)


def _ensure_binaries(config: settings.Settings) -> binaries.Binaries:
    folder = binaries.default_dir(config)
    if binaries.missing(folder):
        log = config.cache / "logs" / "controlplane-build.log"
        _say(
            f"building the Kubernetes {binaries.KUBERNETES_VERSION} control plane from the "
            f"Go module proxy, once per machine (about 15 min on 2 cores; log: {log})"
        )
        began = time.monotonic()
        binaries.build(config, log=log)
        _say(f"built in {time.monotonic() - began:.0f}s into {folder}")
    _ensure_coredns(config)
    return binaries.locate(config)


def _ensure_coredns(config: settings.Settings) -> Path:
    """CoreDNS's binary (for the local ``coredns`` image), built once per machine."""
    found = coredns.binary(config.cache)
    if found is not None:
        return found
    log = config.cache / "logs" / coredns.LOG_NAME
    _say(
        f"building CoreDNS {coredns.VERSION} from the Go module proxy, once per machine "
        f"(a few minutes on 2 cores; log: {log})"
    )
    began = time.monotonic()
    built = coredns.build(config, log=log)
    _say(f"built in {time.monotonic() - began:.0f}s: {built}")
    return built


def _export_hint(status: dict[str, object]) -> None:
    kubectl = binaries.kubectl_path()
    print("\n$ kubectl get namespaces", flush=True)
    subprocess.run(
        [str(kubectl), "--kubeconfig", str(status["kubeconfig"]), "get", "namespaces"],
        check=False,
        timeout=30,
    )
    print(f"\nexport KUBECONFIG={status['kubeconfig']}")
    print(f"kubectl is {kubectl}; stop with: vk-fargate dev down")


async def _dev_up(config: settings.Settings, *, with_aws: bool) -> int:
    root = state.dev_root(config.state_dir)
    recorded = state.load(root)
    if recorded is not None:
        alive = state.liveness(recorded)
        if all(alive.values()):
            running_aws = stack.has_aws(recorded)
            if with_aws and not running_aws:
                print(
                    f"error: a dev cluster without AWS is running at {recorded['server']}; "
                    "stop it with `vk-fargate dev down` first, then `vk-fargate dev up --aws`",
                    file=sys.stderr,
                )
                return 1
            _say(f"a dev cluster is already running at {recorded['server']}")
            if running_aws and not with_aws:
                _say(
                    f"it runs with AWS (moto at {recorded['aws']['endpoint_url']}); for one "
                    "without AWS: `vk-fargate dev down`, then `vk-fargate dev up`"
                )
            _export_hint(recorded)
            return 0
        dead = ", ".join(name for name, ok in alive.items() if not ok)
        _say(f"cleaning up a dev cluster that is no longer whole ({dead} not running)")
        state.stop_all(recorded)
    shutil.rmtree(root, ignore_errors=True)
    bins = _ensure_binaries(config)
    status = await stack.up(bins, root, _say, cache=config.cache, with_aws=with_aws)
    _export_hint(status)
    return 0


def _dev_status(config: settings.Settings, *, as_json: bool) -> int:
    recorded = state.load(state.dev_root(config.state_dir))
    if recorded is None:
        print("no dev cluster is recorded; start one with: vk-fargate dev up", file=sys.stderr)
        return 1
    alive = state.liveness(recorded)
    for name, ok in alive.items():
        recorded["components"][name]["running"] = ok
    recorded["running"] = all(alive.values())
    if recorded["running"] and "coredns" in recorded:
        recorded["coredns"]["pods"] = clusterdns.pods(Path(recorded["kubeconfig"]))
    if as_json:
        print(json.dumps(recorded, indent=2))
    else:
        print(f"kubeconfig: {recorded['kubeconfig']}")
        for name, component in recorded["components"].items():
            word = "running" if component["running"] else "STOPPED"
            print(f"{name:<24} {word:<8} pid {component['pid']:<8} {component['url']}")
        if stack.has_aws(recorded):
            aws = recorded["aws"]
            print(f"aws: {aws['endpoint_url']} ({aws['region']}), vpc {aws['vpc_id']}")
            print(f"  private subnets {', '.join(aws['private_subnets'])}")
            print(f"  public subnets  {', '.join(aws['public_subnets'])}")
            print(f"  pod execution role {aws['role_arn']}")
        if "pods" in recorded.get("coredns", {}):
            _coredns_status(recorded["coredns"])
    return 0 if recorded["running"] else 1


def _coredns_status(recorded: dict[str, Any]) -> None:
    found = recorded["pods"]
    ready = sum(1 for pod in found if pod["ready"])
    print(
        f"coredns: {ready}/{len(found)} Ready, {recorded['image']}, "
        f"Service kube-dns {recorded['service_ip']}"
    )
    for pod in found:
        word = "Ready" if pod["ready"] else "not ready"
        print(f"  {pod['name']:<32} {pod['phase']:<10} {word:<10} {pod['node']}")


def _dev_down(config: settings.Settings, *, keep_files: bool) -> int:
    root = state.dev_root(config.state_dir)
    recorded = state.load(root)
    if recorded is None:
        _say("no dev cluster is recorded; nothing to stop")
        return 0
    for name in state.stop_all(recorded):
        _say(f"stopped {name}")
    if keep_files:
        _say(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _dev_demo(config: settings.Settings) -> int:
    recorded = state.load(state.dev_root(config.state_dir))
    if recorded is None or not all(state.liveness(recorded).values()):
        print("no running dev stack; start one with: vk-fargate dev up", file=sys.stderr)
        return 1
    demo.run(str(recorded["kubeconfig"]), aws=recorded.get("aws"))
    print(f"\nexport KUBECONFIG={recorded['kubeconfig']}   # then: kubectl get nodes")
    print("stop everything with: vk-fargate dev down")
    return 0


async def _dev_restart(config: settings.Settings, name: str, *, kill: bool) -> int:
    how = "killed" if kill else "stopped"
    component = await restart.restart(state.dev_root(config.state_dir), name, kill=kill)
    _say(f"{name} {how} and started again: pid {component['pid']}, healthy at {component['url']}")
    return 0


def _dev_build(config: settings.Settings) -> int:
    bins = _ensure_binaries(config)
    print(bins.kube_apiserver.parent)
    print(coredns.default_dir(config.cache))
    return 0


def _kubeconfig(explicit: Path | None, config: settings.Settings) -> Path | None:
    """``--kubeconfig``, else ``$KUBECONFIG`` (None here), else the dev cluster's."""
    if explicit is not None or os.environ.get("KUBECONFIG"):
        return explicit
    recorded = state.load(state.dev_root(config.state_dir))
    return Path(recorded["kubeconfig"]) if recorded else None


async def _profile(args: argparse.Namespace, config: settings.Settings) -> int:
    kubeconfig = _kubeconfig(args.kubeconfig, config)
    if args.profile_command == "create":
        return await profilecli.create(
            kubeconfig,
            name=args.name,
            namespace=args.namespace,
            labels=args.labels,
            subnets=args.subnets,
            role=args.role,
            cluster=args.cluster,
        )
    if args.profile_command == "get":
        return await profilecli.get(kubeconfig, output=args.output)
    return await profilecli.delete(kubeconfig, name=args.name, cluster=args.cluster)


WHATIF_FLAGS = ("vcpu", "memory", "storage", "hours_per_day", "provisioned", "ec2_instance")


def _cost(args: argparse.Namespace, config: settings.Settings) -> int:
    if any(getattr(args, flag) not in (None, False) for flag in WHATIF_FLAGS):
        return costcli.whatif(
            vcpu=args.vcpu,
            memory_gb=args.memory,
            storage_gb=args.storage,
            hours_per_day=args.hours_per_day,
            region=args.region,
            provisioned=args.provisioned,
            ec2_instance=args.ec2_instance,
            rates_file=args.rates,
            as_json=args.json,
        )
    return asyncio.run(
        costcli.running(
            _kubeconfig(args.kubeconfig, config),
            region=args.region,
            rates_file=args.rates,
            as_json=args.json,
        )
    )


def _daemon() -> None:
    """What the long-running commands (``run``, ``fleetd``) set up first: their logs and
    the read buffer of each TLS connection they will hold (``memory``)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    memory.small_tls_buffers()


def _fleetd(path: Path, *, stop_on_exit: bool) -> int:
    _daemon()
    asyncio.run(server.serve(fleet_config.load(path), stop_microvms=stop_on_exit))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="vk-fargate", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="version", version=f"vk-fargate {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="a local cluster for trying vk-fargate out")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_commands.add_parser("up", help="start the local cluster in the background")
    up.add_argument(
        "--aws",
        action="store_true",
        help="also start a fake AWS (moto's server on loopback: a VPC, subnets, a pod "
        "execution role) and give pods ENIs from it",
    )
    status = dev_commands.add_parser("status", help="describe the local cluster")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    down = dev_commands.add_parser("down", help="stop the local cluster")
    down.add_argument("--keep-files", action="store_true", help="keep certificates and logs")
    restarting = dev_commands.add_parser(
        "restart",
        help="stop one component and start it again as `dev up` started it",
        description="Components: etcd, kube-apiserver, kube-controller-manager, "
        "kube-scheduler, registry, fleetd, provider (`dev status` lists them). A graceful "
        "restart of fleetd ends its microVMs (the dev stack runs it with --stop-on-exit); "
        "--kill keeps them for the new fleetd to adopt.",
    )
    restarting.add_argument("component", help="a name `vk-fargate dev status` shows")
    restarting.add_argument(
        "--kill", action="store_true", help="SIGKILL it, as a crash would (default: SIGTERM)"
    )
    dev_commands.add_parser(
        "build", help="build the control-plane binaries and CoreDNS (once per machine)"
    )
    dev_commands.add_parser("demo", help="replay the seed's walkthrough on the running stack")
    commands.add_parser(
        "run", help="run the provider (settings from VK_FARGATE_* environment variables)"
    )
    profile = commands.add_parser("profile", help="Fargate profiles (like eksctl fargateprofile)")
    profile.add_argument("--kubeconfig", type=Path, default=None)
    profile.add_argument("--cluster", default="vk-fargate-dev", help="name shown in messages")
    profile_commands = profile.add_subparsers(dest="profile_command", required=True)
    create = profile_commands.add_parser("create", help="create a profile")
    create.add_argument("--name", required=True)
    create.add_argument("--namespace", required=True, help="selector namespace (* and ? allowed)")
    create.add_argument("--labels", help="selector labels: k=v[,k=v]")
    create.add_argument("--subnets", help="comma-separated private subnet ids")
    create.add_argument("--pod-execution-role-arn", dest="role")
    get = profile_commands.add_parser("get", help="list profiles")
    get.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    remove = profile_commands.add_parser("delete", help="delete a profile (stops its pods)")
    remove.add_argument("--name", required=True)
    cost = commands.add_parser(
        "cost",
        help="what Fargate costs: a what-if (--vcpu/--memory), else the running pods",
        description="With --vcpu and --memory: the monthly cost of one pod of that request "
        "and of an always-on EC2 instance of that size. Without: every running pod with a "
        "CapacityProvisioned annotation, per month at 24 h/day. Built-in rates: verify "
        "before quoting; override with --rates.",
    )
    cost.add_argument("--vcpu", type=costcli.amount, help="what-if: vCPU requested")
    cost.add_argument("--memory", type=costcli.amount, help="what-if: memory requested, GB")
    cost.add_argument(
        "--storage", type=costcli.amount, help="what-if: ephemeral storage, GB (default 20)"
    )
    cost.add_argument(
        "--hours-per-day", type=costcli.amount, help="what-if: hours a day (default 24)"
    )
    cost.add_argument(
        "--provisioned",
        action="store_true",
        help="what-if: price --vcpu/--memory as the billed size, without +256 MiB and rounding",
    )
    cost.add_argument("--ec2-instance", help="what-if: compare with this instance type")
    cost.add_argument("--region", help="default: us-east-1 (running pods: each pod's node)")
    cost.add_argument("--rates", type=Path, help="YAML overriding the built-in rates")
    cost.add_argument("--json", action="store_true", help="machine-readable output")
    cost.add_argument("--kubeconfig", type=Path, default=None, help="running pods: the cluster")
    fleetd = commands.add_parser("fleetd", help="run the reference bare-metal fleet daemon")
    fleetd.add_argument("--config", type=Path, required=True, help="fleet.yaml")
    fleetd.add_argument(
        "--stop-on-exit",
        action="store_true",
        help="stop every microVM and remove the bridges on exit (default: leave them running)",
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = settings.load()
    try:
        if args.command == "run":
            _daemon()
            return asyncio.run(app.run(settings.provider()))
        if args.command == "profile":
            return asyncio.run(_profile(args, config))
        if args.command == "fleetd":
            return _fleetd(args.config, stop_on_exit=args.stop_on_exit)
        if args.command == "cost":
            return _cost(args, config)
        if args.dev_command == "up":
            return asyncio.run(_dev_up(config, with_aws=args.aws))
        if args.dev_command == "status":
            return _dev_status(config, as_json=args.json)
        if args.dev_command == "down":
            return _dev_down(config, keep_files=args.keep_files)
        if args.dev_command == "demo":
            return _dev_demo(config)
        if args.dev_command == "restart":
            return asyncio.run(_dev_restart(config, args.component, kill=args.kill))
        return _dev_build(config)
    except errors.VkFargateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
