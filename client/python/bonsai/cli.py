"""`python3 -m bonsai`: compress, inspect and query a bonsai server.

Results go to stdout, progress bars and errors to stderr. Exit status: 0 on
success, 2 when the request was invalid (INVALID_ARGUMENT or a bad command
line), 1 for every other failure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import grpc
from google.protobuf import json_format

from bonsai.client import Client
from bonsai.errors import BonsaiError
from bonsai.progress_bars import CompressBars
from bonsai.report_table import format_capabilities, format_inspect, format_report

DEFAULT_TARGET = "localhost:50051"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bonsai", description=__doc__.splitlines()[0])
    p.add_argument("--target", default=os.environ.get("BONSAI_TARGET", DEFAULT_TARGET),
                   help="server address, e.g. localhost:50051 or dns:///bonsai-headless.ns.svc:50051 "
                        "(default: $BONSAI_TARGET or %(default)s)")
    p.add_argument("--timeout", type=float, default=3600.0, help="deadline per call, seconds")
    t = p.add_argument_group("TLS", "TLS is on when any of these is given (each defaults to its "
                                    "$BONSAI_TLS_... variable)")
    t.add_argument("--tls", action="store_true", default=_env_flag("BONSAI_TLS"),
                   help="use TLS, trusting the system's CAs unless --tls-ca says otherwise ($BONSAI_TLS=1)")
    t.add_argument("--tls-ca", metavar="PEM", default=os.environ.get("BONSAI_TLS_CA") or None,
                   help="CA certificate(s) that signed the server's certificate ($BONSAI_TLS_CA)")
    t.add_argument("--tls-cert", metavar="PEM", default=os.environ.get("BONSAI_TLS_CERT") or None,
                   help="client certificate, for a server that requires one (mutual TLS) ($BONSAI_TLS_CERT)")
    t.add_argument("--tls-key", metavar="PEM", default=os.environ.get("BONSAI_TLS_KEY") or None,
                   help="private key of --tls-cert ($BONSAI_TLS_KEY)")
    t.add_argument("--tls-server-name", metavar="NAME", default=os.environ.get("BONSAI_TLS_SERVER_NAME") or None,
                   help="name to expect in the server's certificate when the target differs, e.g. "
                        "through a port-forward ($BONSAI_TLS_SERVER_NAME)")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="compress a model (ONNX, safetensors, or a Hugging Face folder)")
    c.add_argument("input", help="a model file, or a folder of safetensors shards; an .onnx file's "
                                 "external data files beside it go with it")
    c.add_argument("-o", "--output-file", "--output-path", required=True, dest="output_file",
                   help="where to write the model: a file for a file (data files beside it), "
                        "a folder for a folder")
    c.add_argument("--method", default="magnitude")
    c.add_argument("--sparsity", type=float, default=0.5)
    c.add_argument("--scope", choices=("layer", "global"), default="layer")
    c.add_argument("--include", action="append", default=[], metavar="RE")
    c.add_argument("--exclude", action="append", default=[], metavar="RE")
    c.add_argument("--include-only", action="store_true", help="select only tensors matching --include")
    c.add_argument("--override", action="append", default=[], metavar="NAME=SPARSITY")
    c.add_argument("--n", type=int)
    c.add_argument("--m", type=int)
    c.add_argument("--norm", choices=("l1", "l2"))
    c.add_argument("--mode", choices=("mask", "physical"), dest="structured_mode")
    c.add_argument("--block-size", type=int)
    c.add_argument("--dampening", type=float)
    c.add_argument("--per-channel", action="store_true", default=None)
    c.add_argument("--bits", type=int, help="rtn, gptq: 2, 3, 4 or 8 (default 4); sparsegpt: also quantize")
    c.add_argument("--group-size", type=int, help="weights per quantization grid (default 128; 0: per channel)")
    c.add_argument("--symmetric", action="store_true", default=None)
    c.add_argument("--act-order", action="store_true", default=None)
    c.add_argument("--rules", metavar="FILE", help="JSON list of rules (tensor_regex, method, sparsity, ...)")
    c.add_argument("--output", choices=("dense", "packed"), default="dense", help="storage of the output")
    c.add_argument("--quantized-layout", choices=("compressed-tensors", "gptq"), default=None,
                   help="packed safetensors layout of quantized weights (default compressed-tensors)")
    c.add_argument("--calibration", metavar="FILE", help="safetensors of Gram matrices (bonsai.calibration)")
    c.add_argument("--report-json", metavar="FILE", help="also write the report as protobuf JSON")
    c.add_argument("--quiet", action="store_true", help="no progress bars")

    i = sub.add_parser("inspect", help="list a model's tensors and what bonsai would prune")
    i.add_argument("input")
    i.add_argument("--include", action="append", default=[], metavar="RE")
    i.add_argument("--exclude", action="append", default=[], metavar="RE")
    i.add_argument("--json", action="store_true")

    k = sub.add_parser("capabilities", help="formats, methods and limits of the server")
    k.add_argument("--json", action="store_true")
    return p


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _client(args) -> Client:
    files = (args.tls_ca, args.tls_cert, args.tls_key)
    credentials = None
    if args.tls and all(f is None for f in files):
        credentials = grpc.ssl_channel_credentials()  # the system's CAs
    return Client(args.target, timeout=args.timeout, credentials=credentials, tls_ca=args.tls_ca,
                  tls_cert=args.tls_cert, tls_key=args.tls_key, tls_server_name=args.tls_server_name)


def _overrides(items: Sequence[str]) -> dict:
    result = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise ValueError(f"--override expects NAME=SPARSITY, got {item!r}")
        result[name] = float(value)
    return result


def _compress(client: Client, args) -> None:
    options = {k: getattr(args, k) for k in ("n", "m", "norm", "structured_mode", "block_size",
                                             "dampening", "per_channel", "bits", "group_size",
                                             "symmetric", "act_order")}
    rules = []
    if args.rules:
        with open(args.rules) as f:
            rules = json.load(f)
    bars = CompressBars(enabled=not args.quiet)
    try:
        result = client.compress(
            args.input, method=args.method, sparsity=args.sparsity, scope=args.scope,
            include=args.include, exclude=args.exclude, include_only=args.include_only,
            overrides=_overrides(args.override), options=options, rules=rules, output=args.output,
            quantized_layout=args.quantized_layout,
            calibration=args.calibration, output_path=args.output_file,
            progress=bars.progress, upload_progress=bars.upload, download_progress=bars.download)
    finally:
        bars.close()
    if args.report_json:
        with open(args.report_json, "w") as f:
            f.write(json_format.MessageToJson(result.report, preserving_proto_field_name=True))
            f.write("\n")
    print(format_report(result.report, packed=args.output == "packed"))


def _print_message(message, as_json: bool, formatter) -> None:
    if as_json:
        print(json_format.MessageToJson(message, preserving_proto_field_name=True))
    else:
        print(formatter(message))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with _client(args) as client:
            if args.command == "compress":
                _compress(client, args)
            elif args.command == "inspect":
                _print_message(client.inspect(args.input, include=args.include, exclude=args.exclude),
                               args.json, format_inspect)
            else:
                _print_message(client.capabilities(), args.json, format_capabilities)
    except BonsaiError as err:
        print(f"error: {err.code_name}: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return 2 if err.code == grpc.StatusCode.INVALID_ARGUMENT else 1
    except (OSError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, (ValueError, TypeError)) else 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


def main_exit() -> None:
    """Entry point of the `bonsai` console script."""
    sys.exit(main())
